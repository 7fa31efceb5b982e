"""Builders for the cifar components: CIFAR-10 and ResNet-18 (torch and torchvision code).

CIFAR-10's "python version" is a folder of pickles. With `check_integrity = true` torchvision's
`CIFAR10` reads it after checking every file against the official md5 sums, so only the
official files are unpickled. With `check_integrity = false` this module reads the same layout
itself, for re-packed data. Unpickling can run code that a file names, so that reader uses an
unpickler that accepts only what a CIFAR batch holds (numpy arrays, lists, dicts, strings,
numbers) and refuses anything else; it decodes Python 2 strings as latin-1, like torchvision.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image
from torch import nn
from torch.utils.data import Dataset
from torchvision.datasets import CIFAR10
from torchvision.datasets.utils import check_integrity
from torchvision.transforms import v2

from pipeforge import BuildContext, DataError, Datasets
from pipeforge_cifar.plugin import Cifar10Params, ResNet18Params

FOLDER = CIFAR10.base_folder  # "cifar-10-batches-py"
TRAIN_FILES = [name for name, _ in CIFAR10.train_list]  # data_batch_1 .. data_batch_5
TEST_FILE = CIFAR10.test_list[0][0]  # test_batch
META_FILE = CIFAR10.meta["filename"]  # batches.meta
FILES = [*TRAIN_FILES, TEST_FILE, META_FILE]
OFFICIAL_MD5 = {**dict(CIFAR10.train_list), **dict(CIFAR10.test_list), META_FILE: CIFAR10.meta["md5"]}
WHAT_TO_PUT = (
    "put the CIFAR-10 python version there (data_batch_1 .. data_batch_5, test_batch, "
    "batches.meta: the folder inside cifar-10-python.tar.gz from "
    "https://www.cs.toronto.edu/~kriz/cifar.html)"
)

# ---------------------------------------------------------------------------------- dataset


def build_cifar10(params: Cifar10Params, context: BuildContext) -> Datasets:
    """Splits `train` (data_batch_1..5, train_transforms) and `test` (test_batch, eval_transforms).

    Raises `DataError` when files are missing (after a download, if allowed, failed), do not
    match the official checksums while `check_integrity` is on, or are malformed.
    """
    root = Path(params.root).expanduser().absolute()
    folder = root / FOLDER
    if params.download and not folder.exists():
        # Only into a missing folder: torchvision would otherwise extract the archive over the
        # user's (e.g. re-packed) files whenever their checksums differ.
        _download(root, folder)
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise DataError(_missing_message(folder, missing, params.download))

    train_transform = v2.Compose([context.build("transform", s) for s in params.train_transforms])
    eval_transform = v2.Compose([context.build("transform", s) for s in params.eval_transforms])
    if params.check_integrity:
        train, test = _official(root, folder, train_transform, eval_transform)
        classes = list(train.classes)
    else:
        classes = _label_names(folder / META_FILE)
        train = CifarImages(*_read_batches([folder / n for n in TRAIN_FILES], len(classes)), train_transform)
        test = CifarImages(*_read_batches([folder / TEST_FILE], len(classes)), eval_transform)
    return Datasets(splits={"train": train, "test": test}, classes=classes)


def _download(root: Path, folder: Path) -> None:
    try:
        CIFAR10(str(root), train=True, download=True)
    except Exception as exc:  # no network, a proxy, a full disk, a bad archive…
        raise DataError(
            f"cifar.cifar10: CIFAR-10 is not in {folder} and downloading it failed "
            f"({type(exc).__name__}: {exc}); {WHAT_TO_PUT}, or check the network"
        ) from exc


def _missing_message(folder: Path, missing: list[str], download: bool) -> str:
    if not folder.exists():
        hint = "" if download else ", or set dataset.download=true to download it (163 MB)"
        return f"cifar.cifar10: CIFAR-10 not found: {folder} does not exist; {WHAT_TO_PUT}{hint}"
    return (
        f"cifar.cifar10: {folder} lacks {', '.join(missing)}; it needs all of {', '.join(FILES)}. "
        "Nothing is downloaded over an existing folder: complete it, or move it away to download afresh"
    )


def _official(root: Path, folder: Path, train_transform: Callable, eval_transform: Callable) -> tuple[Any, Any]:
    try:
        train = CIFAR10(str(root), train=True, transform=train_transform, download=False)
        test = CIFAR10(str(root), train=False, transform=eval_transform, download=False)
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted"
        differ = [name for name in FILES if not check_integrity(str(folder / name), OFFICIAL_MD5[name])]
        if not differ:
            raise
        raise DataError(
            f"cifar.cifar10: {', '.join(differ)} in {folder} do not match the official CIFAR-10 "
            "checksums (md5). If they are CIFAR-10 re-packed in the same layout, load them with "
            "--set dataset.check_integrity=false; otherwise replace them with the official files"
        ) from exc
    return train, test


class CifarImages(Dataset):
    """`(transform(image), label)`, the image a 32×32 RGB PIL image, as torchvision's CIFAR10."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable[[Any], Any]) -> None:
        self.images = images  # (N, 32, 32, 3) uint8
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


def _label_names(path: Path) -> list[str]:
    meta = _unpickle(path)
    names = meta.get("label_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise DataError(
            f"cifar.cifar10: {path} is not CIFAR-10's batches.meta: expected a dict whose "
            "'label_names' is a list of class names"
        )
    return names


def _read_batches(paths: list[Path], num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 32, 32, 3) and labels (N,) of the batch files, concatenated in order."""
    images, labels = zip(*(_read_batch(path, num_classes) for path in paths))
    if sum(len(y) for y in labels) == 0:
        raise DataError(f"cifar.cifar10: {', '.join(p.name for p in paths)} hold no images")
    return np.concatenate(images), np.concatenate(labels)


def _read_batch(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    entry = _unpickle(path)
    if not isinstance(entry, dict) or "data" not in entry or "labels" not in entry:
        found = sorted(map(str, entry)) if isinstance(entry, dict) else type(entry).__name__
        raise DataError(
            f"cifar.cifar10: {path} is not a CIFAR-10 batch: expected a dict with 'data' and "
            f"'labels', found {found}"
        )
    data = entry["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(
            f"cifar.cifar10: {path}: 'data' is a {shape}; expected a uint8 array of shape (N, 3072), "
            "N images of 3×32×32 bytes (1024 red, 1024 green, 1024 blue, rows top to bottom)"
        )
    labels = _labels(path, entry["labels"], num_classes)
    if len(labels) != len(data):
        raise DataError(
            f"cifar.cifar10: {path} has {labels.size} labels for {len(data)} images; "
            "expected one label per row of 'data'"
        )
    # Channel-major rows → height × width × channel images, as torchvision's CIFAR10 does.
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _labels(path: Path, found: Any, num_classes: int) -> np.ndarray:
    """A batch's `labels` as int64, or `DataError` unless they are integers in 0..num_classes-1.

    Converting with `dtype=int64` would truncate 0.5 (and 1.7) to a valid class silently, so the
    values are taken as they are and only integers pass (not a bool, not 1.0).
    """
    expected = f"labels must be in 0..{num_classes - 1} (batches.meta names {num_classes} classes)"
    try:
        labels = np.asarray(found)
    except (TypeError, ValueError) as exc:  # ragged nested lists
        raise DataError(f"cifar.cifar10: {path}: 'labels' is not a list of integers ({exc}); {expected}") from exc
    if labels.ndim != 1:
        raise DataError(
            f"cifar.cifar10: {path}: 'labels' has shape {labels.shape}; expected a flat list of "
            f"integers, one per image; {expected}"
        )
    if labels.dtype.kind not in "iu":  # float, bool, str, or object (e.g. ints beyond int64)
        others = [v for v in labels.tolist() if type(v) is not int]
        if others:
            # Show a fraction if there is one: [0.0, 0.5] is refused for the 0.5.
            wrong = next((v for v in others if not (isinstance(v, float) and v.is_integer())), others[0])
            raise DataError(f"cifar.cifar10: {path}: 'labels' holds {_short(wrong)}, not an integer; {expected}")
    if labels.size == 0:
        return labels.astype(np.int64)
    wrong = next((v for v in labels.tolist() if not 0 <= v < num_classes), None)
    if wrong is not None:
        raise DataError(f"cifar.cifar10: {path} has label {_short(wrong)}; {expected}")
    return labels.astype(np.int64)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "…"


class BatchUnpickler(pickle.Unpickler):
    """An unpickler for CIFAR batches: it builds numpy arrays and plain data, and nothing else."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes bytes in a protocol-2 pickle
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(
                f"it refers to {module}.{name}, which a CIFAR batch never holds (refused: "
                "loading it could run code)"
            )
        return super().find_class(module, name)


def _unpickle(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            return BatchUnpickler(f, encoding="latin1").load()
    except Exception as exc:  # UnpicklingError, EOFError, ValueError… from a damaged file
        raise DataError(
            f"cifar.cifar10: {path} cannot be read as a CIFAR-10 python pickle "
            f"({type(exc).__name__}: {exc})"
        ) from exc


# ---------------------------------------------------------------------------------- model


def build_resnet18(params: ResNet18Params, context: BuildContext) -> nn.Module:
    """torchvision's ResNet-18, untrained, with `num_classes` outputs (default: the dataset's)."""
    from torchvision.models import resnet18

    data_classes = context.datasets.num_classes if context.datasets else None
    num_classes = params.num_classes or data_classes or 10
    if data_classes is not None and num_classes < data_classes:
        raise DataError(
            f"cifar.resnet18: model.num_classes={num_classes} but the dataset has {data_classes} "
            "classes; remove model.num_classes to use the dataset's count"
        )
    return resnet18(weights=None, num_classes=num_classes)
