"""What builders and hooks receive: `Datasets`, `BuildContext` and `RunState`.

These are plain containers; none imports torch, so plugins can import them at no cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from pipeforge.errors import PluginError
from pipeforge.registry import ComponentSpec, Registry

if TYPE_CHECKING:
    from pipeforge.recipe import Recipe


@dataclass
class Datasets:
    """What a dataset component returns.

    - `splits`: split name → a map-style torch `Dataset` yielding `(input, target)`. The split
      named `train` is trained on; every other split is evaluated after each epoch.
    - `classes`: class names in label order, when the task is classification.
    - `skipped`: `(path, reason)` for every input the dataset left out (e.g. a corrupt image);
      the engine lists them in the run dir's `skipped_files.txt`.
    """

    splits: dict[str, Any]
    classes: list[str] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def num_classes(self) -> int | None:
        return len(self.classes) if self.classes is not None else None


@dataclass
class BuildContext:
    """Given to every builder: the run's settings and what has been built so far.

    `model`, `optimizer` and `datasets` are filled in as the engine builds them (dataset first,
    then model, loss, optimizer, scheduler), so a later builder can use an earlier result. A
    scheduler's builder also gets `schedule_length`: how many times it will be stepped (epochs,
    or optimizer steps with `interval = "step"`) after the warm-up, the default length of a
    decay.
    """

    registry: Registry
    seed: int
    device: str
    run_dir: Path | None = None
    recipe: Recipe | None = None
    datasets: Datasets | None = None
    model: Any = None
    optimizer: Any = None
    total_steps: int | None = None  # optimizer steps the run will take (set before the scheduler)
    schedule_length: int | None = None  # times the scheduler is stepped after the warm-up

    def build(self, kind: str, spec: ComponentSpec | dict[str, Any]) -> Any:
        """Build a registered component of `kind` from a spec (`name` plus its params).

        The engine builds every recipe table this way, and builders use it for their sub-parts
        (e.g. a dataset building its transform list). A table from the recipe was validated,
        and bound to its component, by the recipe validator; a spec a plugin makes itself is
        validated here, with `PluginError` when the name is not registered or the params do
        not validate.
        """
        if isinstance(spec, dict):
            try:
                spec = ComponentSpec.model_validate(spec)
            except ValidationError as exc:
                raise PluginError(f"{kind} spec {spec!r}: {exc}") from None
        bound = spec.bound
        if bound is None or bound.component.kind != kind:
            bound = spec.bind(self.registry, kind)
        return bound.build(self)


@dataclass
class StopRequest:
    """Asks a run to checkpoint and stop: set `signal` (e.g. from a signal handler); the loop
    checks it after every step and raises `Interrupted`."""

    signal: int | None = None


@dataclass
class RunState:
    """Given to lifecycle hooks: the live objects of a run and its history so far.

    `epoch` is the current epoch counting from 1 (0 before the first; on resume, the epochs
    already done until the next one starts), `global_step` counts optimizer steps since the
    start, and `history` holds every row written to metrics.jsonl. `stop_reason` is set once a
    callback has called `request_stop`.
    """

    recipe: Recipe
    run_dir: Path
    device: str
    model: Any
    optimizer: Any
    scheduler: Any
    datasets: Datasets
    epoch: int = 0
    global_step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    stop_reason: str | None = None
    scaler: Any = None  # the fp16 gradient scaler, when precision is fp16
    ema: Any = None  # the AveragedModel of the weights, with trainer.ema_decay (`ema.module`)
    grad_norm: Any = None  # the latest pre-clip gradient norm (a device tensor), with log_grad_norm
    model_summary: dict[str, Any] = field(default_factory=dict)  # parameters, trainable, size_mb

    def request_stop(self, reason: str) -> None:
        """End training early, as a finished run: after the current step (or, when asked in
        `on_epoch_end`, after this epoch) the run evaluates, checkpoints, writes `model.pt` and
        ends normally. `reason` is shown on the console and recorded in env.json. The first
        request wins; later ones are ignored."""
        if self.stop_reason is None:
            self.stop_reason = str(reason) or "a callback asked to stop"
