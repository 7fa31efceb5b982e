"""A synthetic classification dataset and an MLP, so a recipe runs with no download."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset

from pipeforge.builtin import params as p
from pipeforge.context import BuildContext, Datasets
from pipeforge.errors import Problem, RecipeError

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


def build_dataset(params: p.SyntheticClassificationParams, context: BuildContext) -> Datasets:
    """Gaussian blobs around random class centres; the same seed gives the same data."""
    generator = torch.Generator().manual_seed(context.seed)
    centres = torch.randn(params.classes, params.features, generator=generator)
    centres = centres / centres.norm(dim=1, keepdim=True) * params.separation

    def sample(count: int) -> TensorDataset:
        labels = torch.randint(0, params.classes, (count,), generator=generator)
        noise = torch.randn(count, params.features, generator=generator)
        return TensorDataset(centres[labels] + noise, labels)

    splits = {"train": sample(params.n_train), "val": sample(params.n_val)}
    return Datasets(splits=splits, classes=[f"class_{i}" for i in range(params.classes)])


def build_mlp(params: p.MLPParams, context: BuildContext) -> nn.Module:
    out_features = params.out_features or (context.datasets.num_classes if context.datasets else None)
    if out_features is None:
        raise RecipeError([Problem("model.out_features", "required here: the dataset does not name its classes")])
    layers: list[nn.Module] = [nn.Flatten()]
    width = params.in_features
    for hidden in params.hidden:
        layers += [nn.Linear(width, hidden), _ACTIVATIONS[params.activation]()]
        if params.dropout:
            layers.append(nn.Dropout(params.dropout))
        width = hidden
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)
