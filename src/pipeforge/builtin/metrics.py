"""The built-in accuracy metric.

A metric is an object with `name`, `reset()`, `update(outputs, targets)`, `compute() -> float`
and, to work under data parallelism, `all_reduce(reduce)` which sums its state across ranks.
It accumulates on the device so that evaluation syncs with the host once per split, not per batch.
"""

from __future__ import annotations

from typing import Callable

import torch

from pipeforge.builtin import params as p
from pipeforge.context import BuildContext


class Accuracy:
    """Top-k accuracy over class logits; `name` is the key suffix in metrics (`val_accuracy`)."""

    def __init__(self, top_k: int = 1) -> None:
        self.name = "accuracy" if top_k == 1 else f"top{top_k}_accuracy"
        self.top_k = top_k
        self.reset()

    def reset(self) -> None:
        self._correct: torch.Tensor | int = 0
        self._total = 0

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        if self.top_k == 1:
            hits = outputs.argmax(dim=1) == targets
        else:
            k = min(self.top_k, outputs.shape[1])
            hits = (outputs.topk(k, dim=1).indices == targets.unsqueeze(1)).any(dim=1)
        self._correct = self._correct + hits.sum()
        self._total += targets.shape[0]

    def all_reduce(self, reduce: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Combine the counts of every rank (data-parallel evaluation)."""
        counts = torch.tensor([float(self._correct), float(self._total)])
        counts = reduce(counts.to(self._correct.device) if torch.is_tensor(self._correct) else counts)
        self._correct, self._total = counts[0], int(counts[1].item())

    def compute(self) -> float:
        if self._total == 0:
            return float("nan")
        return float(self._correct) / self._total


def build_accuracy(params: p.AccuracyParams, context: BuildContext) -> Accuracy:
    return Accuracy(params.top_k)
