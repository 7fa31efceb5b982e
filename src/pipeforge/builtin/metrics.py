"""The built-in accuracy metric: a `pipeforge.Metric` whose state is two sums."""

from __future__ import annotations

import torch

from pipeforge.builtin import params as p
from pipeforge.context import BuildContext
from pipeforge.contract import Metric


class Accuracy(Metric):
    """Top-k accuracy over class logits; `name` is the key suffix in metrics (`val_accuracy`).

    The counts stay on the device, so evaluation waits for it once per split."""

    sum_states = ("correct", "total")

    def __init__(self, top_k: int = 1) -> None:
        self.name = "accuracy" if top_k == 1 else f"top{top_k}_accuracy"
        self.top_k = top_k
        self.reset()

    def reset(self) -> None:
        self.correct: torch.Tensor | int = 0
        self.total = 0

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        if self.top_k == 1:
            hits = outputs.argmax(dim=1) == targets
        else:
            k = min(self.top_k, outputs.shape[1])
            hits = (outputs.topk(k, dim=1).indices == targets.unsqueeze(1)).any(dim=1)
        self.correct = self.correct + hits.sum()
        self.total += targets.shape[0]

    def compute(self) -> float:
        if self.total == 0:
            return float("nan")
        return float(self.correct) / self.total


def build_accuracy(params: p.AccuracyParams, context: BuildContext) -> Accuracy:
    return Accuracy(params.top_k)
