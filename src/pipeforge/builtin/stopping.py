"""The built-in early-stopping callback: stop when a metric has stopped improving.

It is an ordinary `pipeforge.Callback`: it reads each epoch's row in `on_epoch_end`, asks the
run to stop through `state.request_stop`, and keeps its counters in `state_dict()`, so a resumed
run counts on from where the checkpoint was taken. Imports no torch.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field

from pipeforge.context import BuildContext, RunState
from pipeforge.contract import Callback
from pipeforge.errors import PluginError
from pipeforge.registry import METRIC_KEY, Params


class EarlyStoppingParams(Params):
    monitor: str = Field("val_loss", min_length=1, max_length=200, json_schema_extra=METRIC_KEY,
                         description='The metrics.jsonl key to watch, e.g. "val_loss" or "val_accuracy".')
    mode: Literal["auto", "min", "max"] = Field(
        "auto", description='"min": lower is better; "max": higher is better; "auto": min for keys ending in "loss".'
    )
    patience: int = Field(3, ge=1, le=1_000_000, description="Epochs without improvement before the run stops.")
    min_delta: float = Field(0.0, ge=0.0, allow_inf_nan=False,
                             description="The least change that counts as an improvement.")
    start_from_epoch: int = Field(0, ge=0, le=1_000_000,
                                  description="Epochs (counting from the start) that are not watched, e.g. a warm-up.")


class EarlyStopping(Callback):
    """Stops a run after `patience` epochs in which `monitor` did not improve by more than
    `min_delta`; a value that is not finite never counts as an improvement."""

    def __init__(self, params: EarlyStoppingParams, label: str = "callback 'early_stopping'") -> None:
        self.params = params
        self.label = label
        self.minimise = params.mode == "min" or (params.mode == "auto" and params.monitor.endswith("loss"))
        self.best: float | None = None
        self.bad_epochs = 0

    def on_epoch_end(self, state: RunState, epoch: int, metrics: dict[str, float]) -> None:
        p = self.params
        if epoch <= p.start_from_epoch:
            return
        if p.monitor not in metrics:
            raise PluginError(f"{self.label}: monitor '{p.monitor}' is not a key of this run's metrics "
                              f"(it has: {', '.join(sorted(metrics))})")
        value = float(metrics[p.monitor])
        if self._improves(value):
            self.best, self.bad_epochs = value, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs >= p.patience:
            state.request_stop(
                f"early stopping: {p.monitor} did not improve by more than {p.min_delta:g} for "
                f"{self.bad_epochs} epochs (best {self.best if self.best is not None else 'none'})"
            )

    def _improves(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        delta = self.params.min_delta
        return value < self.best - delta if self.minimise else value > self.best + delta

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.bad_epochs = state["best"], int(state["bad_epochs"])


def build_early_stopping(params: EarlyStoppingParams, context: BuildContext) -> EarlyStopping:
    return EarlyStopping(params)
