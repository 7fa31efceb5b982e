"""pipeforge plugin: the `mlflow.logger` callback, which logs a run to an MLflow tracking store."""

__version__ = "0.1.0"
