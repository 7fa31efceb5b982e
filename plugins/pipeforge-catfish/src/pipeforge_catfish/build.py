"""Builders for the catfish components: the image-folder dataset and SimpleNet (torch code)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset, TensorDataset
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms import v2

from pipeforge import BuildContext, DataError, Datasets
from pipeforge_catfish.params import ImageFolderParams, SimpleNetParams

LAYOUT = (
    "expected the layout root/<split>/<class>/<image>, e.g. root/train/cat/001.jpg and "
    "root/val/fish/002.png: one folder per split, inside it one folder per class"
)
SHOWN_REASONS = 3  # how many unreadable files an error message quotes
FILE_KINDS = {
    stat.S_IFIFO: "FIFO (named pipe)", stat.S_IFSOCK: "socket", stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device", stat.S_IFDIR: "folder",
}
LINKED_FOLDER = (
    "a link to a folder ({target}); not followed: a linked folder can lead back into this split "
    "(repeating images, or giving another class's images this class's label)"
)

# ---------------------------------------------------------------------------------- dataset


class ImageFiles(Dataset):
    """`(transform(image), class index)` for a list of image files, read when indexed.

    Like torchvision's ImageFolder, but every file here was fully decoded once when the dataset
    was built, so a file that fails now was changed during the run.
    """

    def __init__(self, samples: list[tuple[Path, int]], transform: Callable[[Any], Any]) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, target = self.samples[index]
        try:
            image = read_image(path)
        except Exception as exc:
            raise DataError(
                f"{path}: cannot be read any more ({type(exc).__name__}: {exc}); it was readable "
                "when the run started, so it was changed or removed during the run"
            ) from exc
        with image:
            return self.transform(image), target


def build_image_folder(params: ImageFolderParams, context: BuildContext) -> Datasets:
    """One split per sub-folder of `params.root`, classes from the class folders (sorted).

    Every candidate file (an image extension, as ImageFolder accepts) is fully decoded once;
    one that fails is left out and returned in `Datasets.skipped` with the reason, and so is
    anything that is not a regular file (a FIFO, a socket, a device, a broken link: never
    opened) and every link to a folder inside a class folder (never followed). Files are only
    ever opened for reading. Raises `DataError` for a missing root or split folder, splits
    whose class folders differ, class folders that are links into one another or around the
    split, and a class folder with no readable image.
    """
    root = Path(params.root).expanduser().absolute()
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise DataError(f"catfish.image_folder: dataset root {root} {what}; {LAYOUT}")
    transform = v2.Compose([context.build("transform", spec) for spec in params.transforms])
    if params.in_memory:
        random_ones = [s.name for s in params.transforms if s.name.startswith("random_")]
        if random_ones:
            raise DataError(
                f"catfish.image_folder: in_memory = true would apply {', '.join(random_ones)} once "
                "and freeze it; set dataset.in_memory=false to draw a new augmentation every epoch"
            )

    classes = _class_folders(root, "train")
    splits: dict[str, Any] = {}
    skipped: list[tuple[str, str]] = []
    for split in params.splits:
        found = _class_folders(root, split)
        if found != classes:
            raise DataError(
                f"catfish.image_folder: {root / split} has class folders {found} but {root / 'train'} "
                f"has {classes}; every split needs the same class folders (labels follow their sorted names)"
            )
        samples, bad = _scan_split(root / split, classes)
        skipped += bad
        _check_output(samples[0][0], transform)
        splits[split] = _in_memory(samples, transform) if params.in_memory else ImageFiles(samples, transform)
    return Datasets(splits=splits, classes=classes, skipped=skipped)


def _class_folders(root: Path, split: str) -> list[str]:
    folder = root / split
    if not folder.is_dir():
        raise DataError(
            f"catfish.image_folder: split folder {folder} does not exist; {LAYOUT}. List only the "
            "splits you have, e.g. --set 'dataset.splits=[\"train\", \"val\"]'"
        )
    # Hidden folders (.ipynb_checkpoints from a notebook, .git, …) are not classes.
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DataError(f"catfish.image_folder: {folder} has no class folders; {LAYOUT}")
    _refuse_overlapping_classes(folder, classes)
    return classes


def _refuse_overlapping_classes(folder: Path, classes: list[str]) -> None:
    """`DataError` if a class folder, through a link, holds the split or another class folder.

    A class folder may be a link (e.g. to another disk), but one that leads to the split
    folder, an ancestor of it, or into another class's folder would label the same images twice.
    """
    split = Path(os.path.realpath(folder)).parts
    real = sorted((Path(os.path.realpath(folder / name)).parts, name) for name in classes)
    for parts, name in real:
        if split[: len(parts)] == parts:
            raise DataError(
                f"catfish.image_folder: class folder {folder / name} is a link to {Path(*parts)}, "
                f"which holds the split folder {folder} itself; {LAYOUT}"
            )
    # Sorted by path components, a folder comes right before any folder inside it.
    for (outer, first), (inner, second) in zip(real, real[1:]):
        if inner[: len(outer)] == outer:
            raise DataError(
                f"catfish.image_folder: class folders {folder / first} and {folder / second} lead "
                f"(through a link) to the same images in {Path(*inner)}; every class needs its own folder"
            )


def _scan_split(folder: Path, classes: list[str]) -> tuple[list[tuple[Path, int]], list[tuple[str, str]]]:
    """Every readable image of one split with its class index, and every unreadable one."""
    samples: list[tuple[Path, int]] = []
    skipped: list[tuple[str, str]] = []
    for index, name in enumerate(classes):
        candidates, left_out = _image_files(folder / name)
        skipped += left_out
        if not candidates:
            raise DataError(
                f"catfish.image_folder: class folder {folder / name} has no image files "
                f"({', '.join(IMG_EXTENSIONS)}); {LAYOUT}"
            )
        bad = [(str(path), reason) for path in candidates if (reason := unreadable(path))]
        if len(bad) == len(candidates):
            quoted = "; ".join(f"{Path(p).name}: {r}" for p, r in bad[:SHOWN_REASONS])
            raise DataError(
                f"catfish.image_folder: none of the {len(bad)} image files in {folder / name} "
                f"can be decoded ({quoted})"
            )
        bad_paths = {p for p, _ in bad}
        samples += [(path, index) for path in candidates if str(path) not in bad_paths]
        skipped += bad
    return samples, skipped


def _image_files(folder: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files under `folder` (recursively, like ImageFolder) with an image extension, sorted,
    and the entries left out with the reason: links to folders and unlistable sub-folders.

    Unlike ImageFolder, a link to a folder is not followed: one to `..` would give the other
    classes' images this class's label, and one to `.` loops.
    """
    found: list[Path] = []
    skipped: list[tuple[str, str]] = []
    pending = [folder]
    while pending:
        directory = pending.pop()
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(Path(entry.path))
                    elif entry.is_symlink() and entry.is_dir():
                        skipped.append((entry.path, LINKED_FOLDER.format(target=os.readlink(entry.path))))
                    elif entry.name.lower().endswith(IMG_EXTENSIONS):
                        found.append(Path(entry.path))
        except OSError as exc:
            if directory == folder:
                raise DataError(
                    f"catfish.image_folder: class folder {folder} cannot be listed ({exc.strerror})"
                ) from exc
            skipped.append((str(directory), f"folder cannot be listed ({exc.strerror})"))
    return sorted(found), skipped


class NotARegularFile(OSError):
    """An image path that is a FIFO, socket, device or broken link: refused without being read."""


def _open_regular(path: str, flags: int) -> int:
    """`open()`'s opener that opens only a regular file (it would block forever on a FIFO).

    The type is checked before opening, so a device is never opened, and again on the open
    descriptor (O_NONBLOCK: a FIFO swapped in meanwhile cannot block), so a file replaced in
    between is caught too.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            raise NotARegularFile(f"a broken link (to {os.readlink(path)}); not opened") from None
        raise
    fd = os.open(path, flags | os.O_NONBLOCK) if stat.S_ISREG(mode) else None
    if fd is not None:
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode):
            return fd
        os.close(fd)
    kind = FILE_KINDS.get(stat.S_IFMT(mode), "special file")
    raise NotARegularFile(f"not a regular file but a {kind}; not opened")


def read_image(path: Path) -> Image.Image:
    """The image at `path`, fully decoded (the file is closed again).

    Raises `NotARegularFile` (an OSError) for anything but a regular file, which is then never
    read, and what PIL raises for a file it cannot decode.
    """
    with open(path, "rb", opener=_open_regular) as file:
        image = Image.open(file)
        try:
            image.load()
        except BaseException:
            image.close()
            raise
    return image


def unreadable(path: Path) -> str | None:
    """Why `path` cannot be decoded, or None if it can.

    `Image.verify()` alone passes a truncated JPEG, so the whole image is decoded with
    `load()`. PIL's LOAD_TRUNCATED_IMAGES is left at its default (off) so truncation is an error.
    """
    try:
        read_image(path).close()
    except NotARegularFile as exc:
        return str(exc)
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError…
        return f"{type(exc).__name__}: {exc}"
    return None


def _check_output(path: Path, transform: Callable[[Any], Any]) -> None:
    with read_image(path) as image:
        sample = transform(image)
    if not isinstance(sample, torch.Tensor):
        raise DataError(
            f"catfish.image_folder: the transforms turn an image into {type(sample).__name__}, "
            "expected a tensor; end dataset.transforms with to_tensor (and normalize)"
        )


def _in_memory(samples: list[tuple[Path, int]], transform: Callable[[Any], Any]) -> TensorDataset:
    inputs = []
    for path, _ in samples:
        with read_image(path) as image:
            inputs.append(transform(image))
    try:
        stacked = torch.stack(inputs)
    except RuntimeError as exc:
        raise DataError(
            "catfish.image_folder: in_memory = true needs every image transformed to the same "
            f"shape (add a resize to dataset.transforms): {exc}"
        ) from exc
    return TensorDataset(stacked, torch.tensor([target for _, target in samples]))


# ---------------------------------------------------------------------------------- model


class SimpleNet(nn.Module):
    """The seed's SimpleNet: three fully connected layers over the flattened image."""

    def __init__(self, in_features: int = 12288, num_classes: int = 2) -> None:
        super().__init__()
        self.in_features = in_features
        self.fc1 = nn.Linear(in_features, 84)
        self.fc2 = nn.Linear(84, 50)
        self.fc3 = nn.Linear(50, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The seed's x.view(-1, 12288) silently regroups a batch of the wrong image size into a
        # different number of rows; flatten(1) keeps one row per image (same result otherwise).
        x = x.flatten(1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


def build_simplenet(params: SimpleNetParams, context: BuildContext) -> nn.Module:
    """SimpleNet with `num_classes` outputs (default: the dataset's classes, else 2).

    Raises `DataError` when the training images do not have `in_features` values each, or the
    dataset has more classes than the model has outputs.
    """
    data_classes = context.datasets.num_classes if context.datasets else None
    num_classes = params.num_classes or data_classes or 2
    if data_classes is not None and num_classes < data_classes:
        raise DataError(
            f"catfish.simplenet: model.num_classes={num_classes} but the dataset has "
            f"{data_classes} classes; remove model.num_classes to use the dataset's count"
        )
    _check_input_size(params.in_features, context)
    return SimpleNet(params.in_features, num_classes)


def _check_input_size(in_features: int, context: BuildContext) -> None:
    train = context.datasets.splits.get("train") if context.datasets else None
    if train is None or len(train) == 0:
        return
    sample = train[0][0]
    if isinstance(sample, torch.Tensor) and sample.numel() != in_features:
        raise DataError(
            f"catfish.simplenet: model.in_features={in_features} but each training image has "
            f"{sample.numel()} values (shape {list(sample.shape)}); set model.in_features="
            f"{sample.numel()} or resize the images so channels × height × width = {in_features}"
        )
