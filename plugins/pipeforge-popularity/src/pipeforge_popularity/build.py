"""Torch code of the popularity components; imported only when a run builds them."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset

from pipeforge import BuildContext, Datasets

from pipeforge_popularity.plugin import CLASSES, ProductsParams, SimpleNetParams


class SimpleNet(nn.Module):
    """The seed's SimpleNet: one hidden ReLU layer, raw logits out (no softmax)."""

    def __init__(self, in_features: int, hidden: int, out_features: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def build_simplenet(params: SimpleNetParams, context: BuildContext) -> nn.Module:
    """The two-layer MLP; keeps the seed's attribute names so its state_dict keys match."""
    return SimpleNet(params.in_features, params.hidden, params.out_features)


def build_products(params: ProductsParams, context: BuildContext) -> Datasets:
    """Train then test products, drawn once from `context.seed` (same seed, same data).

    Like the seed's `generate_data`, each split draws all prices, then all ratings.
    """
    generator = torch.Generator().manual_seed(context.seed)

    def uniform(count: int, bounds: list[float]) -> torch.Tensor:
        low, high = bounds
        return torch.rand(count, 1, generator=generator, dtype=torch.float64) * (high - low) + low

    def products(count: int) -> TensorDataset:
        prices = uniform(count, params.price_range)
        ratings = uniform(count, params.rating_range)
        # Label in float64 like the seed (numpy), then features to float32 as it does.
        labels = (prices + ratings > params.threshold).long().reshape(-1)
        return TensorDataset(torch.cat([prices, ratings], dim=1).float(), labels)

    return Datasets(splits={"train": products(params.n_train), "test": products(params.n_test)}, classes=list(CLASSES))
