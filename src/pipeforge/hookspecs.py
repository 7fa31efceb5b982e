"""The plugin contract: every hook pipeforge calls, in the order a run calls them.

This file is the API reference for plugin authors. A plugin is a module (named by an entry point
in the `pipeforge` group) or an object (returned by a `callback` component) with functions
decorated by `pipeforge.hookimpl` whose names and keyword arguments match the specs below. An
implementation may accept any subset of a hook's arguments. All arguments are keyword-only.

"first result wins" means pluggy stops at the first implementation that returns something other
than None; built-in implementations are registered like any other plugin and resolve names
through the component registry, so a recipe can only reach registered components.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from pipeforge.context import BuildContext, RunState
    from pipeforge.registry import Component, ComponentSpec

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
# Building: called once per run, in this order, after the recipe is validated.
# --------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def build_dataset(spec: ComponentSpec, context: BuildContext) -> Any:
    """Build the recipe's `[dataset]`: a `pipeforge.Datasets` holding the splits.

    Stops at first non-None result. The built-in implementation builds the registered dataset
    component named `spec.name` with its validated params.

    :param spec: the `[dataset]` table (`spec.name`, `spec.params`).
    :param context: the run's `BuildContext` (seed, device, run dir, `build()` for sub-parts).
    """


@hookspec(firstresult=True)
def build_model(spec: ComponentSpec, context: BuildContext) -> Any:
    """Build the recipe's `[model]`: a `torch.nn.Module` (moved to the device by the engine).

    Stops at first non-None result. `context.datasets` is already built, so a model may read
    e.g. the number of classes from it.

    :param spec: the `[model]` table.
    :param context: the run's `BuildContext`.
    """


@hookspec(firstresult=True)
def build_loss(spec: ComponentSpec, context: BuildContext) -> Any:
    """Build the recipe's `[loss]`: a callable `loss(outputs, targets) -> scalar tensor`.

    Stops at first non-None result.

    :param spec: the `[loss]` table (default `cross_entropy`).
    :param context: the run's `BuildContext`, with `model` on its device.
    """


@hookspec(firstresult=True)
def build_optimizer(spec: ComponentSpec, context: BuildContext) -> Any:
    """Build the recipe's `[optimizer]` over `context.model`'s parameters.

    Stops at first non-None result.

    :param spec: the `[optimizer]` table.
    :param context: the run's `BuildContext`, with `model` on its device.
    """


@hookspec(firstresult=True)
def build_scheduler(spec: ComponentSpec, context: BuildContext) -> Any:
    """Build the recipe's optional `[scheduler]` for `context.optimizer`; stepped once per epoch.

    Stops at first non-None result. Not called when the recipe has no `[scheduler]`.

    :param spec: the `[scheduler]` table.
    :param context: the run's `BuildContext`, with `model` and `optimizer`.
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
    """Called after every optimizer step. Keep it cheap: it runs on the hot path.

    :param batch_index: index of the batch within the epoch, from 0.
    :param loss: the batch's loss as a detached 0-d tensor *on the device*; calling `.item()`
        waits for the device, so do it only when you need the number.
    :param batch_size: samples in this batch.
    """


@hookspec
def on_validation_end(state: RunState, split: str, metrics: dict[str, float]) -> None:
    """Called after each evaluation pass over a non-training split.

    :param split: the split evaluated, e.g. "val" or "test".
    :param metrics: this split's metrics, keyed `<split>_loss`, `<split>_accuracy`, ….
    """


@hookspec
def on_epoch_end(state: RunState, epoch: int, metrics: dict[str, float]) -> None:
    """Called after each epoch's training and evaluation, once its metrics are recorded.

    :param epoch: the epoch just finished, counting from 1.
    :param metrics: the row written to `metrics.jsonl`: `epoch`, `train_loss`, and
        `<split>_<metric>` for every evaluated split.
    """


@hookspec
def on_fit_end(state: RunState) -> None:
    """Called once after the last epoch, after `model.pt` is written. Close files here.

    Also called when training stops with an error, so resources are released either way.
    """


# --------------------------------------------------------------------------------------------
# Inference: called by `pipeforge predict` on a finished run.
# --------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def load_inputs(spec: ComponentSpec, inputs: list[str], context: BuildContext) -> Any:
    """Turn the raw inputs a user gives `pipeforge predict` into one batch for the model.

    Stops at first non-None result. A dataset plugin implements this for its own datasets
    (return None when `spec.name` is not one of yours) and decides what an input is: a file
    path (an image, a CSV or JSON file) or a literal (e.g. `[[7.5, 3.0]]`). The outputs are
    named with the run's class names.

    :param spec: the run's `[dataset]` table, validated (`spec.name`, `spec.params`).
    :param inputs: the INPUT arguments, as given on the command line.
    :param context: a `BuildContext` for the run (no datasets are built).
    :return: a tensor batch whose first dimension is the number of samples; raise
        `pipeforge.DataError` naming the input when one cannot be read.
    """

