"""pipeforge plugin: the `timm.model` component, any timm architecture by name."""

__version__ = "0.1.0"
