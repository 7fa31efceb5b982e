"""pipeforge plugin: Fashion-MNIST and the tutorial's 784-512-512-10 MLP."""

__version__ = "0.1.0"
