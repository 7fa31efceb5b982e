"""pipeforge-catfish: an ImageFolder-style dataset that skips corrupt images, and SimpleNet."""

__version__ = "0.1.0"
