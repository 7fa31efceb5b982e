"""The training loop. Read `fit` top to bottom: seed → build → epochs (train, evaluate, record)
→ save. Every extra behaviour (progress, TensorBoard, …) hangs off a lifecycle hook.
"""

from __future__ import annotations

import math
import random
from typing import Any

import torch

from pipeforge.context import BuildContext, Datasets, RunState
from pipeforge.errors import PluginError, TrainingError, UsageError
from pipeforge.loaders import make_batches
from pipeforge.plugins import Plugins
from pipeforge.recipe import Recipe
from pipeforge.rundir import RunDir


def fit(recipe: Recipe, plugins: Plugins, run_dir: RunDir, extra: list[Any] = ()) -> RunState:
    """Train `recipe` into `run_dir`; `extra` are plugin objects (e.g. the console progress).

    Returns the final `RunState`. Raises `TrainingError` if the loss stops being finite,
    `PluginError`/`DataError` if a component cannot be built.
    """
    hook = plugins.manager.hook
    trainer = recipe.trainer
    seed_everything(recipe.run.seed)
    device = resolve_device(trainer.device)
    context = BuildContext(plugins.registry, recipe.run.seed, device.type, run_dir.path, recipe)

    # Build in dependency order: a model may need the data's classes, an optimizer the model.
    context.datasets = datasets = _expect(hook.build_dataset(spec=recipe.dataset, context=context), Datasets, "dataset", recipe.dataset.name)
    run_dir.write_skipped(datasets.skipped)
    context.model = model = hook.build_model(spec=recipe.model, context=context).to(device)
    loss_fn = hook.build_loss(spec=recipe.loss, context=context)
    context.optimizer = optimizer = hook.build_optimizer(spec=recipe.optimizer, context=context)
    scheduler = hook.build_scheduler(spec=recipe.scheduler, context=context) if recipe.scheduler else None
    metrics = [context.build("metric", spec) for spec in recipe.metrics]
    callbacks = [context.build("callback", spec) for spec in recipe.callbacks]

    # The shuffle order has its own generator so that model code drawing random numbers
    # (dropout, augmentation) does not change which samples form a batch.
    order = torch.Generator().manual_seed(recipe.run.seed)
    train = make_batches(
        _split(datasets, "train"), batch_size=trainer.batch_size, shuffle=trainer.shuffle,
        drop_last=trainer.drop_last, generator=order, device=device, num_workers=trainer.num_workers,
    )
    evaluations = {
        split: make_batches(
            _split(datasets, split), batch_size=trainer.eval_batch_size or trainer.batch_size,
            shuffle=False, drop_last=False, generator=None, device=device,
            num_workers=trainer.num_workers,
        )
        for split in _eval_splits(recipe, datasets)
    }

    state = RunState(recipe, run_dir.path, device.type, model, optimizer, scheduler, datasets)
    for plugin in [*callbacks, *extra]:
        plugins.manager.register(plugin)
    try:
        hook.on_fit_start(state=state)
        for epoch in range(1, trainer.epochs + 1):
            state.epoch = epoch
            hook.on_epoch_start(state=state, epoch=epoch, steps=len(train))
            row: dict[str, Any] = {"epoch": epoch, "train_loss": train_epoch(state, train, loss_fn, hook)}
            for split, batches in evaluations.items():
                split_metrics = evaluate(model, batches, loss_fn, metrics, device, split)
                hook.on_validation_end(state=state, split=split, metrics=split_metrics)
                row.update(split_metrics)
            row["lr"] = optimizer.param_groups[0]["lr"]
            if scheduler is not None:
                scheduler.step()
            state.history.append(row)
            run_dir.append_metrics(row)
            hook.on_epoch_end(state=state, epoch=epoch, metrics=row)
        run_dir.save_model(model.state_dict())
    finally:
        hook.on_fit_end(state=state)
        for plugin in [*callbacks, *extra]:
            plugins.manager.unregister(plugin)
    return state


def train_epoch(state: RunState, batches: Any, loss_fn: Any, hook: Any) -> float:
    """One pass over the training batches; returns the mean loss per sample."""
    model, optimizer = state.model, state.optimizer
    device = torch.device(state.device)
    model.train()
    # The running sum stays on the device: no host sync per step, one at the end of the epoch.
    total = torch.zeros((), device=device)
    count = 0
    for batch_index, (inputs, targets) in enumerate(batches):
        inputs = inputs.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        state.global_step += 1
        size = targets.shape[0]
        loss = loss.detach()
        total += loss * size
        count += size
        hook.on_batch_end(state=state, batch_index=batch_index, loss=loss, batch_size=size)
    mean = (total / max(count, 1)).item()
    if not math.isfinite(mean):
        raise TrainingError(
            f"the training loss became {mean} in epoch {state.epoch} (by step {state.global_step}); "
            "lower the learning rate or check the data. model.pt was not written."
        )
    return mean


@torch.no_grad()
def evaluate(model: Any, batches: Any, loss_fn: Any, metrics: list[Any], device: torch.device, split: str) -> dict[str, float]:
    """Loss and every metric over one split, as `{<split>_loss: …, <split>_<metric>: …}`."""
    model.eval()
    total = torch.zeros((), device=device)
    count = 0
    for metric in metrics:
        metric.reset()
    for inputs, targets in batches:
        inputs = inputs.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        outputs = model(inputs)
        total += loss_fn(outputs, targets) * targets.shape[0]
        count += targets.shape[0]
        for metric in metrics:
            metric.update(outputs, targets)
    result = {f"{split}_loss": (total / max(count, 1)).item()}
    result.update({f"{split}_{metric.name}": metric.compute() for metric in metrics})
    return result


def seed_everything(seed: int) -> None:
    """Seed python, numpy (when installed) and torch on every device."""
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy
    except ImportError:
        return
    numpy.random.seed(seed % 2**32)


def resolve_device(name: str) -> torch.device:
    """"auto" → CUDA when present, else CPU; "cuda" without a GPU is an error, not a fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError('trainer.device is "cuda" but no CUDA device is available; use "auto" or "cpu"')
    return torch.device(name)


def _expect(value: Any, kind: type, what: str, name: str) -> Any:
    if not isinstance(value, kind):
        raise PluginError(f"{what} '{name}' returned {type(value).__name__}, expected {kind.__name__}")
    return value


def _split(datasets: Datasets, split: str) -> Any:
    if split not in datasets.splits:
        raise PluginError(
            f"the dataset has no '{split}' split (it has: {', '.join(datasets.splits)})"
        )
    return datasets.splits[split]


def _eval_splits(recipe: Recipe, datasets: Datasets) -> list[str]:
    if recipe.trainer.eval_splits is not None:
        return recipe.trainer.eval_splits
    return [split for split in datasets.splits if split != "train"]
