"""Torch code of the simple components; imported only when a run builds them."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset

from pipeforge import BuildContext, Datasets

from pipeforge_simple.plugin import LinearParams, RandomParams


class SimpleModel(nn.Module):
    """The seed's SimpleModel: one linear layer (attribute `fc`, so state_dict keys match)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def build_linear(params: LinearParams, context: BuildContext) -> nn.Module:
    """One `nn.Linear(in_features, out_features)`."""
    return SimpleModel(params.in_features, params.out_features)


def build_random(params: RandomParams, context: BuildContext) -> Datasets:
    """Random samples drawn once from `context.seed`: the same seed gives the same data.

    The seed's SimpleDataset drew a fresh x and label inside every `__getitem__`, so the data
    changed each epoch (and between the train and val loaders' passes). Here each split is a
    fixed set. Labels are scalar class indices (shape `()`), so no `.squeeze()` is needed.
    """
    generator = torch.Generator().manual_seed(context.seed)

    def samples(count: int) -> TensorDataset:
        x = torch.randn(count, params.features, generator=generator)
        y = torch.randint(0, params.classes, (count,), generator=generator)
        return TensorDataset(x, y)

    splits = {"train": samples(params.n_train), "val": samples(params.n_val)}
    return Datasets(splits=splits, classes=[f"class_{i}" for i in range(params.classes)])
