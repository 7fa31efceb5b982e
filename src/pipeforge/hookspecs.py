"""The plugin contract: every hook pipeforge calls, in the order a run calls them.

This file is the API reference for plugin authors. A plugin is a module (named by an entry point
in the `pipeforge` group) or an object (returned by a `callback` component) with functions
decorated by `pipeforge.hookimpl` whose names and keyword arguments match the specs below. An
implementation may accept any subset of a hook's arguments. All arguments are keyword-only.

Every recipe table is built by the registered component it names (`Component.build`, called as
`build(params, context)` with the validated params and a `BuildContext`), so a recipe can only
reach registered components. What each kind's builder returns:

- dataset: a `pipeforge.Datasets` (splits of map-style datasets yielding `(input, target)`);
- model: a `torch.nn.Module` (the engine moves it to the device); `context.datasets` is built;
- loss: a callable `loss(outputs, targets) -> 0-d tensor`;
- optimizer: a `torch.optim.Optimizer` over `context.model.parameters()`;
- scheduler: an LR scheduler of `context.optimizer` (stepped per epoch, or per optimizer step
  with `interval = "step"`; its default length is `context.schedule_length`); one that is
  stepped with a metric has a `monitor` attribute naming the metrics key;
- metric: an object with `name`, `reset()`, `update(outputs, targets)`, `compute() -> float`,
  and `all_reduce(sum_fn)` (used under data parallelism);
- callback: an object whose methods implement lifecycle hooks below (`@pipeforge.hookimpl`);
- transform: a callable applied to one sample.

A dataset component may also have an input reader (`Component.read_inputs`), used by
`pipeforge predict`: `read_inputs(params, inputs, context)` gets the run's validated dataset
params, the INPUT arguments as given on the command line, and a `BuildContext` (its `datasets`
holds the run's classes and no splits). It decides what an input is (a file path, or a literal
such as `[[7.5, 3.0]]`) and returns one tensor batch whose first dimension is the number of
samples; it raises `pipeforge.DataError` naming an input that cannot be read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from pipeforge.context import RunState
    from pipeforge.registry import Component

PROJECT = "pipeforge"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --------------------------------------------------------------------------------------------
# Registration: called once per plugin at discovery, before any recipe is read.
# --------------------------------------------------------------------------------------------


@hookspec
def register_components() -> list[Component]:
    """Return the components this plugin provides.

    Called once for each plugin when pipeforge discovers installed plugins (for every command,
    including `list-plugins` and `validate`), so it must be cheap: do not import torch here;
    give builders as "module:function" strings or import torch inside the builder.

    :return: a list of `pipeforge.Component`. A name another distribution also registers
        makes both unusable with an error naming both. Third-party names must start with the
        plugin's entry-point name and a dot (`popularity.simplenet`).

    May be implemented by entry-point plugins only.
    """


# --------------------------------------------------------------------------------------------
# Lifecycle: called by the engine's loop. Return values are ignored.
# --------------------------------------------------------------------------------------------


@hookspec
def on_fit_start(state: RunState) -> None:
    """Called once, after everything is built and before the first epoch.

    :param state: the `RunState` (recipe, run dir, model, optimizer, device, history).
    """


@hookspec
def on_epoch_start(state: RunState, epoch: int, steps: int) -> None:
    """Called at the start of each training epoch.

    :param epoch: the epoch about to run, counting from 1.
    :param steps: the number of training batches this epoch will run.
    """


@hookspec
def on_batch_end(state: RunState, batch_index: int, loss: Any, batch_size: int) -> None:
    """Called after every training batch. Keep it cheap: it runs on the hot path.

    With `trainer.accumulate_grad_batches = k` it follows each of the k batches of a group;
    `state.global_step` counts optimizer steps (it grows after a group's last batch).

    :param batch_index: index of the batch within the epoch, from 0.
    :param loss: the batch's loss as a detached 0-d tensor *on the device*; calling `.item()`
        waits for the device, so do it only when you need the number.
    :param batch_size: samples in this batch.
    """


@hookspec
def on_validation_end(state: RunState, split: str, metrics: dict[str, float]) -> None:
    """Called after each evaluation pass over a split listed in `trainer.eval_splits`.

    :param split: the split evaluated, e.g. "val" or "test" (or "train" when listed).
    :param metrics: this split's metrics, keyed `<split>_loss`, `<split>_<metric name>`, …;
        the training split's keys start with `train_eval_`, so that they never overwrite
        `train_loss`, the mean loss trained on.
    """


@hookspec
def on_epoch_end(state: RunState, epoch: int, metrics: dict[str, float]) -> None:
    """Called after each epoch's training and evaluation, once its metrics are recorded.

    :param epoch: the epoch just finished, counting from 1.
    :param metrics: the row written to `metrics.jsonl`: `epoch`, `train_loss`,
        `<split>_loss` and `<split>_<metric name>` for every evaluated split (`train_eval_…`
        for the training split), and `lr`.
    """


@hookspec
def on_fit_end(state: RunState) -> None:
    """Called once after the last epoch, after `model.pt` is written. Close files here.

    Also called when training stops with an error, so resources are released either way.
    """


# --------------------------------------------------------------------------------------------
# Hooks of earlier versions, and what replaced them. A plugin that still implements one is
# reported broken with this advice instead of being silently ignored.
# --------------------------------------------------------------------------------------------

REMOVED_HOOKS = {
    **{
        f"build_{kind}": f"every [{kind}] is built by the registered component it names; register "
        f"a {kind} component (it may take another component's spec as a param to wrap it)"
        for kind in ("dataset", "model", "loss", "optimizer", "scheduler")
    },
    "load_inputs": "give the dataset component an input reader: "
    "Component(..., read_inputs=\"module:function\") called as read_inputs(params, inputs, context)",
}
