"""Torch code of the Fashion-MNIST components; imported only when a run builds them."""

from __future__ import annotations

from pathlib import Path
from urllib.error import URLError

import torch
from torch import nn
from torch.utils.data import TensorDataset

from pipeforge import BuildContext, DataError, Datasets

from pipeforge_fashion.plugin import CLASSES, FashionMNISTParams, MLPParams

RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class NeuralNetwork(nn.Module):
    """The seed's NeuralNetwork, with its attribute names so state_dict keys match."""

    def __init__(self, in_features: int, hidden: int, out_features: int) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear_relu_stack = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, out_features),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_relu_stack(self.flatten(x))


def build_mlp(params: MLPParams, context: BuildContext) -> nn.Module:
    """The 784-512-512-10 MLP over flattened images."""
    return NeuralNetwork(params.in_features, params.hidden, params.out_features)


def build_fashion_mnist(params: FashionMNISTParams, context: BuildContext) -> Datasets:
    """Both splits as in-memory `TensorDataset`s; `DataError` when the files cannot be had.

    torchvision finds, downloads and parses the files (its existence check and IDX reader);
    we then convert its `.data` (uint8, N x 28 x 28) once into float images equal to what
    `ToTensor()` gives per item, `x.float() / 255` with a channel axis. A `TensorDataset` lets
    the engine slice batches straight out of the tensors instead of decoding 60,000 PIL images
    every epoch through `__getitem__`.
    """
    splits = {
        "train": _load_split(params, train=True),
        "test": _load_split(params, train=False),
    }
    return Datasets(splits=splits, classes=list(CLASSES))


def _load_split(params: FashionMNISTParams, train: bool) -> TensorDataset:
    from torchvision.datasets import FashionMNIST

    raw = (Path(params.root) / "FashionMNIST" / "raw").resolve()
    try:
        dataset = FashionMNIST(params.root, train=train, download=params.download)
    except (RuntimeError, URLError, OSError, ValueError, TypeError, KeyError, AssertionError) as exc:
        # torchvision raises RuntimeError alike for "not found", a failed download and a file
        # too short for its data; its IDX reader checks a header with `assert` (AssertionError)
        # and a type table (KeyError). Which case it was shows on disk.
        raise DataError(_explain(raw, params.download, exc)) from None
    images = dataset.data.float().div(255).unsqueeze(1)
    return TensorDataset(images, dataset.targets.long())


def _explain(raw: Path, download: bool, exc: Exception) -> str:
    """One message for why the files could not be had: malformed, missing, or not downloaded."""
    reason = " ".join(str(exc).split()) or type(exc).__name__
    if len(reason) > 300:
        reason = reason[:300] + " …"
    wanted = ", ".join(RAW_FILES)
    if all((raw / name).is_file() for name in RAW_FILES):
        return (
            f"cannot read Fashion-MNIST from {raw} ({reason}); the files may "
            f"be truncated or not IDX files. Replace them with the originals: {wanted}."
        )
    where = (
        f"Put the four uncompressed IDX files ({wanted}) from "
        f"https://github.com/zalandoresearch/fashion-mnist into {raw}"
    )
    if not download:
        return f"Fashion-MNIST not found in {raw}. {where}, or set dataset.download=true to fetch them."
    return (
        f"Fashion-MNIST is not in {raw} and downloading it failed ({reason}). {where} "
        "(their .gz archives there are extracted when download is true)."
    )
