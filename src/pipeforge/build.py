"""Building a run: the recipe's components from the registry, in dependency order, checked
against their contracts, plus the training batches they are fed.

`build_parts` is what `engine.fit` calls; `inference` rebuilds a finished run's dataset, model
and metrics with the same functions, so training and evaluation build alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from pipeforge.context import BuildContext, Datasets
from pipeforge.contract import check_callback, check_metric
from pipeforge.distributed import Dist
from pipeforge.errors import PluginError
from pipeforge.loaders import Batches, make_batches
from pipeforge.plugins import Plugins
from pipeforge.recipe import Recipe
from pipeforge.rundir import RunDir
from pipeforge.step import Schedule, build_schedule, steps_per_epoch


@dataclass
class Parts:
    """Everything a recipe builds, ready for the loop."""

    datasets: Datasets
    model: Any  # the plain module: its weights are saved, and it evaluates
    forward: Any  # what trains: the model, maybe wrapped in DDP and/or torch.compile
    eval_forward: Any
    loss_fn: Any
    optimizer: Any
    schedule: Schedule | None
    train: Batches  # this rank's training batches
    metrics: list[Any]
    callbacks: dict[str, Any]  # "<index>.<name>" in recipe.callbacks → the callback object
    labels: dict[str, str]  # the same keys → how messages name the component


def build_parts(recipe: Recipe, plugins: Plugins, run_dir: RunDir, device: torch.device, dist: Dist,
                order: torch.Generator) -> Parts:
    """Build the recipe's components from the registry, in dependency order: a model may need
    the data's classes, an optimizer the model, a scheduler the number of steps in the run.
    Callbacks exist on rank 0 only."""
    context = BuildContext(plugins.registry, recipe.run.seed, device.type, run_dir.path, recipe)
    context.datasets = datasets = build_datasets(context)
    if dist.is_main:
        run_dir.write_skipped(datasets.skipped)
    context.model = model = place_model(build_model(context), device, recipe)
    loss_fn = context.build("loss", recipe.loss)
    context.optimizer = optimizer = context.build("optimizer", recipe.optimizer)
    trainer = recipe.trainer
    train = train_batches(recipe, datasets, order, device, dist)
    schedule = None
    if recipe.scheduler is not None:
        per_epoch = steps_per_epoch(len(train), trainer.accumulate_grad_batches)
        schedule = build_schedule(context, recipe.scheduler, trainer.epochs, per_epoch, trainer.max_steps)
    metrics = build_metrics(context, dist)
    callbacks, labels = build_callbacks(context) if dist.is_main else ({}, {})
    # Evaluation uses the plain module: its shards are uneven across ranks, and a DDP forward
    # would wait on the other ranks.
    forward = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    eval_forward = model
    if recipe.trainer.compile:
        forward, eval_forward = torch.compile(forward), torch.compile(model)
    return Parts(datasets, model, forward, eval_forward, loss_fn, optimizer, schedule, train, metrics, callbacks, labels)


def build_datasets(context: BuildContext) -> Datasets:
    """Build the recipe's `[dataset]`; anything but a `Datasets` is the plugin's error."""
    spec = context.recipe.dataset
    datasets = context.build("dataset", spec)
    if not isinstance(datasets, Datasets):
        raise PluginError(f"dataset '{spec.name}' returned {type(datasets).__name__}, expected pipeforge.Datasets")
    return datasets


def build_model(context: BuildContext) -> torch.nn.Module:
    """Build the recipe's `[model]` (on the CPU); anything but a `torch.nn.Module` is the
    plugin's error."""
    spec = context.recipe.model
    model = context.build("model", spec)
    if not isinstance(model, torch.nn.Module):
        raise PluginError(f"model '{spec.name}' returned {type(model).__name__}, expected a torch.nn.Module")
    return model


def place_model(model: torch.nn.Module, device: torch.device, recipe: Recipe) -> torch.nn.Module:
    """Move a model to the run's device, in channels-last format when the recipe asks for it."""
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if recipe.trainer.channels_last else model


def build_metrics(context: BuildContext, dist: Dist = Dist()) -> list[Any]:
    """Build the recipe's `[[metrics]]`, each checked against the metric contract; two metrics
    writing the same key are refused (the second would silently replace the first)."""
    metrics, keys = [], {}
    for index, spec in enumerate(context.recipe.metrics):
        label = component_label(context, "metric", spec.name, f"metrics[{index}]")
        metric = context.build("metric", spec)
        check_metric(metric, label, data_parallel=dist.enabled)
        if metric.name in keys:
            raise PluginError(f"{keys[metric.name]} and {label} both record '<split>_{metric.name}'; "
                              "remove one, or give one other params")
        keys[metric.name] = label
        metrics.append(metric)
    return metrics


def build_callbacks(context: BuildContext) -> tuple[dict[str, Any], dict[str, str]]:
    """Build the recipe's `[[callbacks]]`, keyed `<index>.<name>` (the key their saved state
    has in checkpoints), with the label messages name each by."""
    callbacks, labels = {}, {}
    for index, spec in enumerate(context.recipe.callbacks):
        key = f"{index}.{spec.name}"
        labels[key] = component_label(context, "callback", spec.name, f"callbacks[{index}]")
        callbacks[key] = context.build("callback", spec)
        check_callback(callbacks[key], labels[key])
    return callbacks, labels


def component_label(context: BuildContext, kind: str, name: str, where: str) -> str:
    """How an error names a component: its name, where the recipe names it, its distribution."""
    owner = context.registry.owner(kind, name)
    origin = f", from {owner.distribution} {owner.version}" if owner is not None else ""
    return f"{kind} '{name}' ({where}{origin})"


def train_batches(recipe: Recipe, datasets: Datasets, order: torch.Generator, device: torch.device,
                  dist: Dist) -> Batches:
    """This rank's training batches, shuffled by `order`."""
    trainer = recipe.trainer
    return make_batches(split_of(datasets, "train"), batch_size=trainer.batch_size, shuffle=trainer.shuffle,
                        drop_last=trainer.drop_last, generator=order, device=device,
                        num_workers=trainer.num_workers, rank=dist.rank, world=dist.world)


def build_ema(model: torch.nn.Module, decay: float | None) -> Any:
    """An exponential moving average of `model`'s weights and buffers (torch's AveragedModel),
    or None without a decay."""
    if decay is None:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def model_summary(model: torch.nn.Module) -> dict[str, Any]:
    """Parameters, trainable parameters and the size of the weights (parameters and buffers)."""
    params = list(model.parameters())
    size = sum(t.numel() * t.element_size() for t in [*params, *model.buffers()])
    return {"parameters": sum(p.numel() for p in params),
            "trainable": sum(p.numel() for p in params if p.requires_grad),
            "size_mb": round(size / 2**20, 3)}


def split_of(datasets: Datasets, split: str) -> Any:
    if split not in datasets.splits:
        raise PluginError(f"the dataset has no '{split}' split (it has: {', '.join(datasets.splits)})")
    return datasets.splits[split]


def eval_splits(recipe: Recipe, datasets: Datasets) -> list[str]:
    if recipe.trainer.eval_splits is not None:
        return recipe.trainer.eval_splits
    return [split for split in datasets.splits if split != "train"]
