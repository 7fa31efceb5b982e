"""The contract of the two component kinds that are objects with behaviour: `Metric` and `Callback`.

Each base class *is* the documentation of its kind: subclass it, override what it lists, and the
engine calls it as described here. `check_metric` and `check_callback` are what the engine runs
on every built metric and callback, so a broken one is refused at start, naming the component
and its distribution, instead of failing in the middle of a run. Nothing here imports torch at
module level.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Callable

from pipeforge.errors import PluginError

if TYPE_CHECKING:
    import torch

    from pipeforge.context import RunState

KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# Keys the engine itself writes per split; a metric named like one would overwrite it.
RESERVED_METRIC_NAMES = ("loss",)


class Metric:
    """A number computed over the batches of one split, e.g. accuracy or F1.

    For each evaluated split the engine calls, in this order: `reset()`; `update(outputs,
    targets)` for every batch (`outputs` is the model's output for the batch, on the run's
    device, in bfloat16 under `precision = "bf16"`; `targets` the batch's targets); under data
    parallelism `all_reduce(sum_fn)` once, to combine what each process accumulated over its
    shard; then `compute()`. Its value is recorded as `<split>_<name>` (`val_accuracy`); the
    training split, when it is evaluated, gives `train_eval_<name>`.

    - `name`: the key suffix; letters, digits and `_`, not `loss` (the engine writes
      `<split>_loss` itself). Set it as a class attribute or in `__init__`.
    - `sum_states`: the names of the attributes that are sums over batches (tensors or
      numbers). The default `all_reduce` sums each of them across processes, which is all a
      count-based metric needs. A metric whose state is not a sum (a maximum, a list of
      predictions) overrides `all_reduce`.

    Keep the state on the device (tensors) so that evaluation waits for the device once per
    split, in `compute()`, not once per batch.
    """

    name: str = ""
    sum_states: tuple[str, ...] = ()

    def reset(self) -> None:
        """Forget everything accumulated (called before each split)."""
        raise NotImplementedError

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        """Accumulate one batch."""
        raise NotImplementedError

    def compute(self) -> float:
        """The metric's value over every batch since `reset()`."""
        raise NotImplementedError

    def all_reduce(self, sum_fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Combine every process's state. `sum_fn(tensor)` returns the sum of that tensor over
        all processes, on the tensor's device (a collective: every process calls it the same
        number of times with tensors of the same shape and dtype). The default sums the
        attributes named in `sum_states` (numbers or tensors of any shape) in one call and
        keeps each one's type, dtype and device."""
        import torch

        values = [getattr(self, attribute) for attribute in self.sum_states]
        if not values:
            return
        # float64 holds counts exactly up to 2**53; one host sync per split, not per batch.
        parts = [torch.as_tensor(value, dtype=torch.float64).detach().cpu() for value in values]
        totals = sum_fn(torch.cat([part.reshape(-1) for part in parts]))
        offset = 0
        for attribute, value, part in zip(self.sum_states, values, parts):
            total = totals[offset:offset + part.numel()].reshape(part.shape)
            offset += part.numel()
            if isinstance(value, torch.Tensor):
                setattr(self, attribute, total.to(dtype=value.dtype, device=value.device))
            else:
                setattr(self, attribute, type(value)(total.item()))


class Callback:
    """Something that reacts to a run's lifecycle: logging, early stopping, a progress bar.

    Override any of the hooks below; each is called as described in `pipeforge.hookspecs`
    (keyword arguments; a method may take a subset of them). Only the methods a subclass
    overrides are called, so an unused hook costs nothing. A method named like a hook but
    misspelled (`on_epoch_ended`) is refused when the run starts.

    A callback can stop the run: `state.request_stop("why")` from any hook ends training after
    the current step (or, from `on_epoch_end`, after that epoch); the run then evaluates,
    writes its last checkpoint and `model.pt`, and ends normally (exit 0).

    State that must survive a resume (counters, best values) goes in `state_dict()`: it is
    saved in every checkpoint and handed to `load_state_dict()` when a run resumes, before
    `on_fit_start`. Return plain values (dicts, lists, str, int, float, bool, None, tensors):
    checkpoints are loaded with `weights_only=True`, so nothing else can be read back.
    Callbacks run in the process that writes the run dir only (rank 0 under data parallelism).
    """

    def on_fit_start(self, state: RunState) -> None:
        """After everything is built (and, on resume, restored), before the first epoch."""

    def on_epoch_start(self, state: RunState, epoch: int, steps: int) -> None:
        """At the start of each training epoch."""

    def on_batch_end(self, state: RunState, batch_index: int, loss: Any, batch_size: int) -> None:
        """After every optimizer step; `loss` stays on the device (`.item()` waits for it)."""

    def on_validation_end(self, state: RunState, split: str, metrics: dict[str, float]) -> None:
        """After each evaluated split."""

    def on_epoch_end(self, state: RunState, epoch: int, metrics: dict[str, float]) -> None:
        """After each epoch, once its row is in metrics.jsonl."""

    def on_fit_end(self, state: RunState) -> None:
        """Once at the end, also when training failed: close files here."""

    def state_dict(self) -> dict[str, Any]:
        """What to save in checkpoints (plain values and tensors only)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from what `state_dict()` returned when the checkpoint was written."""


HOOKS = tuple(name for name in vars(Callback) if name.startswith("on_"))


def overridden_hooks(callback: Callback) -> list[str]:
    """The lifecycle hooks a `Callback` subclass overrides (the ones worth calling)."""
    return [name for name in HOOKS if getattr(type(callback), name) is not getattr(Callback, name)]


def check_metric(metric: Any, label: str, data_parallel: bool) -> None:
    """Refuse a built metric that breaks the contract; `label` names it and its distribution."""
    problems = []
    name = getattr(metric, "name", None)
    if not isinstance(name, str) or not KEY.match(name):
        problems.append(f"its `name` must be a key like 'f1' (letters, digits, _), found {name!r}")
    elif name in RESERVED_METRIC_NAMES:
        problems.append(f"its `name` is '{name}', which would overwrite the engine's <split>_{name}")
    for method in ("reset", "update", "compute"):
        if not callable(getattr(metric, method, None)):
            problems.append(f"it has no `{method}()` method")
    if data_parallel and not callable(getattr(metric, "all_reduce", None)):
        problems.append("it has no `all_reduce(sum_fn)`, which data-parallel evaluation needs "
                        "(subclass pipeforge.Metric and list its sums in `sum_states`)")
    if problems:
        raise PluginError(f"{label} breaks the metric contract: " + "; ".join(problems))


def check_callback(callback: Any, label: str) -> None:
    """Refuse a built callback that is not an object with hooks."""
    if callback is None or isinstance(callback, (str, int, float, bool, dict, list, tuple)):
        raise PluginError(f"{label} returned {type(callback).__name__}; a callback component "
                          "returns an object (subclass pipeforge.Callback)")


def check_state(value: Any, label: str, where: str = "state_dict()") -> None:
    """Refuse callback state that a `weights_only` load could not read back."""
    import torch

    if value is None or isinstance(value, (str, int, float, bool, torch.Tensor)):
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_state(item, label, f"{where}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise PluginError(f"{label}: {where} has a key of type {type(key).__name__}; use str or int keys")
            check_state(item, label, f"{where}[{key!r}]")
        return
    raise PluginError(f"{label}: {where} holds a {type(value).__name__}, which a checkpoint cannot "
                      "hold; use plain values (dict, list, str, int, float, bool, None) and tensors")
