"""Evaluation: the loss and metrics of a model on the splits a run evaluates, after each epoch
and in `pipeforge evaluate`, with the same batches, precision and keys."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from pipeforge.build import split_of
from pipeforge.context import Datasets
from pipeforge.distributed import Dist
from pipeforge.loaders import Batches, make_batches
from pipeforge.recipe import Recipe
from pipeforge.step import Step, resolve_precision


@dataclass
class Evaluator:
    """Loss and metrics of a model on the splits it evaluates: after each epoch of a run, and
    in `pipeforge evaluate`, with the same batches, precision and keys."""

    step: Step
    batches: dict[str, Batches]
    metrics: list[Any]
    train_key: str

    @classmethod
    def build(cls, recipe: Recipe, datasets: Datasets, splits: list[str], forward: Any, loss_fn: Any,
              metrics: list[Any], device: torch.device, dist: Dist, train_key: str = "train") -> Evaluator:
        """Unshuffled batches of each split (this rank's shard of it, unpadded, so every sample
        counts once) at the eval batch size. The training split's keys start with `train_key`:
        during a run that is `train_eval`, so evaluating it does not overwrite the loss trained on."""
        trainer = recipe.trainer
        batches = {
            split: make_batches(split_of(datasets, split), batch_size=trainer.eval_batch_size or trainer.batch_size,
                                shuffle=False, drop_last=False, generator=None, pad=False, device=device,
                                num_workers=trainer.num_workers, rank=dist.rank, world=dist.world)
            for split in splits
        }
        step = Step(forward, loss_fn, None, device, resolve_precision(trainer.precision, device), trainer.channels_last, dist)
        return cls(step, batches, metrics, train_key)

    def run(self, split: str) -> dict[str, float]:
        """`{<key>_loss: …, <key>_<metric>: …}`, the key being the split's name (`train_key`
        for the training split)."""
        return evaluate(self.step, self.batches[split], self.metrics, self.train_key if split == "train" else split)


@torch.no_grad()
def evaluate(step: Step, batches: Batches, metrics: list[Any], split: str) -> dict[str, float]:
    """Loss and every metric over one split, as `{<split>_loss: …, <split>_<metric>: …}`."""
    step.forward.eval()
    total = torch.zeros((), device=step.device)
    count = 0
    for metric in metrics:
        metric.reset()
    for batch in batches.epoch():
        inputs, targets = step.inputs(*batch)
        with step.autocast():
            outputs = step.forward(inputs)
            total += step.loss_fn(outputs, targets).float() * targets.shape[0]
        count += targets.shape[0]
        for metric in metrics:
            metric.update(outputs, targets)
    totals = step.dist.sum(torch.stack([total, torch.tensor(float(count), device=step.device)]))
    if step.dist.enabled:
        for metric in metrics:
            metric.all_reduce(partial(sum_on, step.dist, step.device))
    result = {f"{split}_loss": (totals[0] / totals[1].clamp(min=1)).item()}
    result.update({f"{split}_{metric.name}": metric.compute() for metric in metrics})
    return result


def sum_on(dist: Dist, device: torch.device, tensor: torch.Tensor) -> torch.Tensor:
    """A metric's `sum_fn`: the sum over ranks, computed on the run's device (NCCL reduces only
    CUDA tensors) and returned on the tensor's own device."""
    return dist.sum(tensor.to(device)).to(tensor.device)
