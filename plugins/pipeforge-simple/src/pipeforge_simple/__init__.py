"""pipeforge plugin: a linear model on random data (the 'simple train pipeline' demo)."""

__version__ = "0.1.0"
