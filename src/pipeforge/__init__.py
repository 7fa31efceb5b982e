"""pipeforge: declarative, plugin-based training for PyTorch.

The public API for plugin authors is what this module exports; it imports no torch.
"""

from __future__ import annotations

__version__ = "0.1.0"

from pipeforge.context import BuildContext, Datasets, RunState
from pipeforge.errors import (
    CheckpointError,
    DataError,
    PipeforgeError,
    PluginError,
    RecipeError,
    TrainingError,
    UsageError,
)
from pipeforge.hookspecs import hookimpl
from pipeforge.registry import Component, ComponentSpec, NoParams, Params, TransformSpec

__all__ = [
    "__version__",
    "BuildContext",
    "CheckpointError",
    "Component",
    "ComponentSpec",
    "DataError",
    "Datasets",
    "NoParams",
    "Params",
    "PipeforgeError",
    "PluginError",
    "RecipeError",
    "RunState",
    "TrainingError",
    "TransformSpec",
    "UsageError",
    "hookimpl",
]
