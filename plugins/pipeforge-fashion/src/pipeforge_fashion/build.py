"""Torch code of the Fashion-MNIST components; imported only when a run builds them."""

from __future__ import annotations

import pickle
import re
import struct
from math import prod
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
# torchvision's cache of older versions, processed/{training,test}.pt: read instead of raw/ when
# both exist, as torchvision does.
CACHE_FILES = ("training.pt", "test.pt")
SIDE = 28  # every Fashion-MNIST image is 28 × 28 pixels
UNSIGNED_BYTE = 0x08  # the IDX type code of Fashion-MNIST's files
INTEGER_TYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


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

    Reads `<root>/FashionMNIST/raw` (torchvision's layout; torchvision downloads missing files
    when `download` is on), or torchvision's older cache `processed/{training,test}.pt` where
    both exist, as torchvision does. Every file is checked when it is read: the IDX header
    (type, dimensions, a size that matches the file), 28 × 28 images, one label per image,
    labels 0..9; the cache is loaded with `weights_only=True`. Any problem is a `DataError`
    naming the file, raised before training starts.

    Images become floats equal to what `ToTensor()` gives per item, `x.float() / 255` with a
    channel axis. A `TensorDataset` lets the engine slice batches straight out of the tensors
    instead of decoding 60,000 PIL images every epoch through `__getitem__`.
    """
    base = (Path(params.root) / "FashionMNIST").resolve()
    raw, cache = base / "raw", base / "processed"
    if all((cache / name).is_file() for name in CACHE_FILES):
        splits = {split: _read_cache(cache / name, raw) for split, name in zip(("train", "test"), CACHE_FILES)}
    else:
        _fetch(params, raw)
        splits = {"train": _read_raw(raw, "train"), "test": _read_raw(raw, "t10k")}
    return Datasets(splits=splits, classes=list(CLASSES))


def _fetch(params: FashionMNISTParams, raw: Path) -> None:
    """Make sure the four raw files exist: downloaded by torchvision if allowed, else `DataError`."""
    if all((raw / name).is_file() for name in RAW_FILES):
        return
    if not params.download:
        raise DataError(_explain(raw, download=False, reason=""))
    from torchvision.datasets import FashionMNIST

    try:
        FashionMNIST(params.root, train=True, download=True)
    except (RuntimeError, URLError, OSError, ValueError, TypeError, KeyError, AssertionError) as exc:
        # torchvision raises RuntimeError alike for "not found", a failed download and a file
        # too short for its data; its IDX reader checks a header with `assert` (AssertionError)
        # and a type table (KeyError). Which case it was shows on disk.
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(_explain(raw, params.download, reason)) from None


def _read_raw(raw: Path, prefix: str) -> TensorDataset:
    images_file, labels_file = raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"
    images = _read_idx(images_file, dims=3, raw=raw)
    if images.shape[1:] != (SIDE, SIDE):
        raise DataError(
            f"cannot read Fashion-MNIST from {raw}: {images_file.name} holds images of "
            f"{images.shape[1]} × {images.shape[2]} pixels; Fashion-MNIST's are {SIDE} × {SIDE}"
        )
    labels = _read_idx(labels_file, dims=1, raw=raw)
    return _dataset(images, labels, images_at=str(images_file), labels_at=str(labels_file))


def _read_idx(path: Path, dims: int, raw: Path) -> torch.Tensor:
    """An IDX file of unsigned bytes with `dims` dimensions, as a uint8 tensor of its shape.

    Checked strictly: the magic number (type 0x08, `dims` dimensions) and a data size equal to
    the product of the header's dimensions, so a truncated or padded file is refused.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read Fashion-MNIST from {raw}: {path.name}: {exc.strerror}") from exc
    header = 4 * (1 + dims)
    magic = (UNSIGNED_BYTE << 8) | dims
    shape: tuple[int, ...] = ()
    if len(data) < header:
        problem = f"is {len(data)} bytes long, too short for its header ({header} bytes)"
    elif int.from_bytes(data[:4], "big") != magic:
        problem = (
            f"starts with the magic number 0x{int.from_bytes(data[:4], 'big'):08x}; expected "
            f"0x{magic:08x} (an IDX file of unsigned bytes with {dims} dimension{'s' if dims > 1 else ''})"
        )
    else:
        shape = struct.unpack(f">{dims}I", data[4:header])
        size = prod(shape)
        problem = "" if len(data) - header == size else (
            f"has a header for {' × '.join(map(str, shape))} = {size} bytes of data but holds "
            f"{len(data) - header}"
        )
    if problem:
        raise DataError(
            f"cannot read Fashion-MNIST from {raw}: {path.name} {problem}. The file may be truncated "
            f"or not an IDX file; replace it with the original from {', '.join(RAW_FILES)}"
        )
    if size == 0:
        return torch.zeros(shape, dtype=torch.uint8)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8, offset=header).view(shape)


def _read_cache(path: Path, raw: Path) -> TensorDataset:
    """torchvision's cached `(images, labels)` in `path`, loaded without running any code."""
    remedy = f"remove {path.parent} to read the IDX files in {raw} instead"
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError (refused content), a damaged archive, EOF…
        raise DataError(f"{path}: cannot be loaded as Fashion-MNIST's cache ({_why(exc)}); {remedy}") from None
    pair = isinstance(content, (tuple, list)) and len(content) == 2
    if not (pair and all(isinstance(t, torch.Tensor) for t in content)):
        raise DataError(
            f"{path}: expected torchvision's Fashion-MNIST cache, a pair of tensors (images, labels), "
            f"found {type(content).__name__}; {remedy}"
        )
    images, labels = content
    if images.dtype != torch.uint8 or images.dim() != 3 or tuple(images.shape[1:]) != (SIDE, SIDE):
        raise DataError(
            f"{path}: the images are a {images.dtype} tensor of shape {list(images.shape)}; expected "
            f"uint8 of shape [N, {SIDE}, {SIDE}]; {remedy}"
        )
    if labels.dtype not in INTEGER_TYPES or labels.dim() != 1:
        raise DataError(
            f"{path}: the labels are a {labels.dtype} tensor of shape {list(labels.shape)}; expected "
            f"integers of shape [N]; {remedy}"
        )
    return _dataset(images, labels, images_at=f"{path} (images)", labels_at=f"{path} (labels)")


def _why(exc: Exception) -> str:
    """torch.load's failure in a few words, without its advice to load with weights_only=False."""
    if isinstance(exc, pickle.UnpicklingError):
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f"it refers to {found.group(1)}" if found else "it holds more than tensors"
        return f"{what}, which a cache of tensors never holds: refused, since loading it could run code"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first[:200]}" if first else type(exc).__name__


def _dataset(images: torch.Tensor, labels: torch.Tensor, images_at: str, labels_at: str) -> TensorDataset:
    """The split as float images in [0, 1] with a channel axis, once counts and labels check out."""
    if len(labels) != len(images):
        raise DataError(
            f"Fashion-MNIST: {labels_at} has {len(labels)} labels but {images_at} has {len(images)} "
            "images; they must match, one label per image (replace both with the originals)"
        )
    out_of_range = ((labels < 0) | (labels >= len(CLASSES))).nonzero()
    if len(out_of_range):
        index = int(out_of_range[0, 0])
        raise DataError(
            f"Fashion-MNIST: {labels_at} has label {int(labels[index])} at position {index} "
            f"(of {len(out_of_range)} out of range); labels must be in 0..{len(CLASSES) - 1}, one per class"
        )
    return TensorDataset(images.float().div(255).unsqueeze(1), labels.long())


def _explain(raw: Path, download: bool, reason: str) -> str:
    """One message for why the files could not be had: malformed, missing, or not downloaded."""
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
