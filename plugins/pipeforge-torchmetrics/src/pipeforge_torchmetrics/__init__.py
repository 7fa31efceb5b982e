"""pipeforge plugin: a curated set of torchmetrics metrics as `tm.*` metric components."""

__version__ = "0.1.0"
