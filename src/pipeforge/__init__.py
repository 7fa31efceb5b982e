"""pipeforge: declarative, plugin-based training for PyTorch.

The public API is what this module exports: `run`, `resume`, `evaluate` and `predict` for
users (see `pipeforge.api`), and the types and `hookimpl` marker for plugin authors (see
`pipeforge.hookspecs`). Importing it imports no torch.
"""

from __future__ import annotations

from pipeforge.api import Result, evaluate, predict, resume, run
from pipeforge.context import BuildContext, Datasets, RunState, StopRequest
from pipeforge.contract import Callback, Metric
from pipeforge.errors import (
    CheckpointError,
    DataError,
    Interrupted,
    PipeforgeError,
    PluginError,
    RecipeError,
    TimeLimitReached,
    TrainingError,
    UsageError,
)
from pipeforge.hookspecs import hookimpl
from pipeforge.registry import METRIC_KEY, Component, ComponentSpec, FiniteFloat, Int64, NoParams, Params, TransformSpec
from pipeforge.version import __version__

__all__ = [
    "__version__",
    "BuildContext",
    "Callback",
    "CheckpointError",
    "Component",
    "ComponentSpec",
    "DataError",
    "Datasets",
    "FiniteFloat",
    "Int64",
    "Interrupted",
    "METRIC_KEY",
    "Metric",
    "NoParams",
    "Params",
    "PipeforgeError",
    "PluginError",
    "RecipeError",
    "Result",
    "RunState",
    "StopRequest",
    "TimeLimitReached",
    "TrainingError",
    "TransformSpec",
    "UsageError",
    "evaluate",
    "hookimpl",
    "predict",
    "resume",
    "run",
]
