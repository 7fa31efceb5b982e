"""pipeforge plugin: the product-popularity toy task and its two-layer MLP."""

__version__ = "0.1.0"
