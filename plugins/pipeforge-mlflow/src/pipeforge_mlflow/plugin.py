"""Registration of `mlflow.logger`. Pure pydantic: importing this loads neither MLflow nor torch,
so `list-plugins` and `validate` stay fast; MLflow is imported when a run builds the callback."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from pipeforge import Component, Params, hookimpl

# A tracking URI names its store by its scheme: http(s)://host:port, sqlite:////abs/path.db,
# file:///abs/path, postgresql://…, databricks, or a scheme an MLflow plugin adds.
URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


class MLflowParams(Params):
    tracking_uri: str | None = Field(
        None, min_length=1, max_length=2000,
        description="Tracking store URI (http://host:5000, sqlite:////abs/mlflow.db, …); "
                    "default: $MLFLOW_TRACKING_URI, else a SQLite store in the run dir (mlflow.db).",
    )
    experiment: str | None = Field(None, min_length=1, max_length=500,
                                   description="MLflow experiment (created if missing); default: run.name.")
    run_name: str | None = Field(None, min_length=1, max_length=500,
                                 description="MLflow run name; default: the run dir's name.")
    log_every_n_steps: int = Field(1, ge=1, le=1_000_000_000, description="Log the training loss every N optimizer steps.")
    step_key: str = Field("train_loss_step", min_length=1, max_length=250, pattern=r"^[A-Za-z0-9_./ -]+$",
                          description="MLflow metric key of the per-step training loss.")
    flush_every_s: float = Field(30.0, gt=0, le=1e7,
                                 description="Send the buffered per-step losses at least this often within an epoch (seconds).")
    log_model: bool = Field(False, description="Also log the final model.pt as an artifact.")
    tags: dict[str, str] = Field({}, max_length=100, description="Extra tags of the MLflow run.")

    @field_validator("tracking_uri")
    @classmethod
    def _has_a_scheme(cls, uri: str | None) -> str | None:
        if uri is not None and not URI.match(uri):
            raise ValueError(f"expected a tracking URI with a scheme (http://host:5000, "
                             f"sqlite:////abs/path/mlflow.db, file:///abs/path), found {uri!r}")
        return uri


@hookimpl
def register_components() -> list[Component]:
    return [
        Component(
            "callback", "mlflow.logger", MLflowParams, "pipeforge_mlflow.logger:build",
            "Log the recipe as params, every epoch's metrics, the per-step loss, tags and the run's "
            "files to MLflow; a resumed run continues the same MLflow run.",
        ),
    ]
