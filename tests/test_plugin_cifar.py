"""End-to-end tests of the cifar plugin (seed 004) through the `pipeforge` command, plus the
re-packed-batch reader on files a user might bring (and one they should not).

One run goes through the installed command; the others run the same CLI in this process
(`run_in_process`), so that each does not pay again for an interpreter importing torch and
torchvision."""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import RECIPES, run_in_process, run_pipeforge
from datagen import write_cifar10

pytestmark = pytest.mark.slow  # trains through subprocesses: `-m "not slow"` leaves it out

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RECIPE = RECIPES / "cifar_resnet18.toml"
OFFLINE = ("--set", "dataset.download=false")
REPACKED = ("--set", "dataset.check_integrity=false")
NORMALIZE = '{name="normalize", mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]}'


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def run(run_dir: Path, root: Path, *extra: str, in_process: bool = True):
    return (run_in_process if in_process else run_pipeforge)(
        "run", RECIPE, "--run-dir", run_dir, "--set", f"dataset.root={root}", *extra,
        cwd=run_dir.parent,
    )


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> Path:
    """A learnable 10-class CIFAR-10 in the real pickle layout (not the official checksums)."""
    root = tmp_path_factory.mktemp("cifar")
    write_cifar10(root, n_train=256, n_test=128)
    return root


@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> Path:
    """The same, smaller: what the training tests pay for is ResNet-18's cost per image."""
    root = tmp_path_factory.mktemp("cifar-small")
    write_cifar10(root, n_train=128, n_test=64)
    return root


def test_recipe_validates():
    result = run_pipeforge("validate", RECIPE)
    assert result.returncode == 0, result.stderr
    assert "cifar.cifar10" in result.stdout


def test_recipe_hyperparameters_match_the_seed():
    recipe = tomllib.loads(RECIPE.read_text())
    # Seed 004 ("Pytorch Tutorial for Practitioners"): DataLoader(batch_size=128, shuffle=True),
    # optim.SGD(lr=0.002, momentum=0.9, weight_decay=1e-5), nn.CrossEntropyLoss(),
    # models.resnet18() on CIFAR10(download=True); Normalize with the ImageNet mean/std after
    # RandomSizedCrop and RandomHorizontalFlip (crop size fixed to CIFAR's 32×32, see recipe).
    assert recipe["trainer"]["batch_size"] == 128
    assert recipe["trainer"]["shuffle"] is True
    assert recipe["optimizer"] == {"name": "sgd", "lr": 0.002, "momentum": 0.9, "weight_decay": 1e-5}
    assert recipe["loss"] == {"name": "cross_entropy"}
    assert recipe["model"]["name"] == "cifar.resnet18"
    assert recipe["dataset"]["download"] is True
    assert recipe["dataset"]["check_integrity"] is True
    names = [t["name"] for t in recipe["dataset"]["train_transforms"]]
    assert names == ["random_resized_crop", "random_horizontal_flip", "to_tensor", "normalize"]
    assert recipe["dataset"]["train_transforms"][0]["size"] == [32, 32]
    assert [t["name"] for t in recipe["dataset"]["eval_transforms"]] == ["to_tensor", "normalize"]
    for pipeline in ("train_transforms", "eval_transforms"):
        normalize = recipe["dataset"][pipeline][-1]
        assert normalize["mean"] == [0.485, 0.456, 0.406]
        assert normalize["std"] == [0.229, 0.224, 0.225]
    # The seed never states an epoch count; the recipe picks 10.
    assert recipe["trainer"]["epochs"] == 10
    assert {"name": "accuracy"} in recipe["metrics"]
    assert {"name": "tensorboard"} in recipe["callbacks"]


def test_one_epoch_on_repacked_data(tmp_path, small_root):
    result = run(tmp_path / "run", small_root, "--set", "trainer.epochs=1", *OFFLINE, *REPACKED, in_process=False)
    assert result.returncode == 0, result.stderr
    for name in ("recipe.toml", "env.json", "metrics.jsonl", "model.pt"):
        assert (tmp_path / "run" / name).is_file(), name
    (row,) = metrics(tmp_path / "run")
    assert row["epoch"] == 1
    assert {"train_loss", "test_loss", "test_accuracy"} <= set(row)
    assert "Traceback" not in result.stderr


def test_learns_on_cifar_format_data(tmp_path, small_root):
    # ResNet-18 on one CPU thread costs per image, so this trains on 128 images for 4 epochs of
    # batch 16: 32 steps, which the BatchNorm running statistics that evaluation uses need.
    # The seed's augmentation needs far more steps, so the deterministic eval transforms, and
    # lr 0.003; chance is 0.1. With run.seed 0-6 this ends at 0.92-1.0 (0.86-1.0 an epoch
    # earlier); lr 0.005 or 0.01 at this batch size can end near 0.6.
    result = run(
        tmp_path / "run", small_root, *OFFLINE, *REPACKED,
        "--set", "trainer.epochs=4", "--set", "trainer.batch_size=16", "--set", "optimizer.lr=0.003",
        "--set", f"dataset.train_transforms=[{{name=\"to_tensor\"}}, {NORMALIZE}]",
    )
    assert result.returncode == 0, result.stderr
    rows = metrics(tmp_path / "run")
    assert len(rows) == 4
    assert rows[-1]["test_accuracy"] > 0.6
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]


def test_integrity_check_rejects_repacked_files(tmp_path, cifar_root):
    result = run(tmp_path / "run", cifar_root, *OFFLINE)
    assert result.returncode == 2
    assert "do not match the official CIFAR-10 checksums" in result.stderr
    assert "--set dataset.check_integrity=false" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_data_without_download(tmp_path):
    root = tmp_path / "empty"
    result = run(tmp_path / "run", root, *OFFLINE)
    assert result.returncode == 2
    assert str(root / "cifar-10-batches-py") in result.stderr
    assert "data_batch_1 .. data_batch_5, test_batch, batches.meta" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_batch_file_is_named(tmp_path):
    folder = write_cifar10(tmp_path / "data", n_train=50, n_test=20)
    (folder / "data_batch_3").unlink()
    before = sorted(p.name for p in folder.iterdir())
    result = run(tmp_path / "run", tmp_path / "data", *REPACKED)  # download stays on
    assert result.returncode == 2
    assert "lacks data_batch_3" in result.stderr
    assert "Traceback" not in result.stderr
    # Nothing is downloaded or written over a partial folder.
    assert sorted(p.name for p in folder.iterdir()) == before
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["cifar-10-batches-py"]


# ------------------------------------------------------------------ the re-packed batch reader


def test_reader_concatenates_the_five_training_batches(cifar_root):
    from pipeforge_cifar.build import TRAIN_FILES, _label_names, _read_batches

    folder = cifar_root / "cifar-10-batches-py"
    classes = _label_names(folder / "batches.meta")
    images, labels = _read_batches([folder / name for name in TRAIN_FILES], len(classes))
    assert classes[:2] == ["airplane", "automobile"] and len(classes) == 10
    assert images.shape == (256, 32, 32, 3) and images.dtype == np.uint8
    assert sorted(np.bincount(labels).tolist()) == [25] * 4 + [26] * 6  # balanced, as generated


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_reader_accepts_batches_repacked_by_python3(tmp_path, protocol):
    from pipeforge_cifar.build import _read_batch

    data = np.arange(4 * 3072, dtype=np.int64).astype(np.uint8).reshape(4, 3072)
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": data, "labels": [np.int64(3), 1, 2, 9]}, protocol=protocol))
    images, labels = _read_batch(path, num_classes=10)
    assert images.shape == (4, 32, 32, 3)
    assert labels.tolist() == [3, 1, 2, 9]
    # Row layout is channel-major: the first 1024 bytes are the red plane.
    assert (images[0, :, :, 0].ravel() == data[0, :1024]).all()


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_reader_refuses_a_pickle_that_would_run_code(tmp_path):
    from pipeforge import DataError
    from pipeforge_cifar.build import _read_batch

    marker = tmp_path / "code-ran"
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": _RunsCode(marker), "labels": []}))
    with pytest.raises(DataError, match="refused"):
        _read_batch(path, num_classes=10)
    assert not marker.exists()


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"data": np.zeros((4, 1024), np.uint8), "labels": [0, 1, 2, 3]}, "shape (N, 3072)"),
        ({"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1, 2]}, "3 labels for 4 images"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}, "labels must be in 0..9"),
        ({"images": np.zeros((2, 3072), np.uint8)}, "expected a dict with 'data' and 'labels'"),
    ],
)
def test_reader_explains_malformed_batches(tmp_path, entry, message):
    from pipeforge import DataError
    from pipeforge_cifar.build import _read_batch

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(entry))
    with pytest.raises(DataError, match=r"data_batch_1") as error:
        _read_batch(path, num_classes=10)
    assert message in str(error.value)


def test_checked_path_reads_through_torchvision(monkeypatch, tmp_path):
    """The check_integrity=true path, on files whose md5 torchvision is told to expect (the
    official archive cannot be downloaded here): transforms per split, classes from the meta."""
    import torch
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import calculate_md5
    from torchvision.transforms import v2

    from pipeforge_cifar.build import _official

    folder = write_cifar10(tmp_path, n_train=50, n_test=20)
    md5 = {p.name: calculate_md5(str(p)) for p in folder.iterdir()}
    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", md5[f"data_batch_{i}"]] for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5["batches.meta"]})
    to_tensor = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])

    train, test = _official(tmp_path, folder, to_tensor, lambda image: image.size)
    assert (len(train), len(test)) == (50, 20)
    image, label = train[0]
    assert image.shape == (3, 32, 32) and 0 <= label < 10
    assert test[0][0] == (32, 32)  # the eval transform, not the training one
    assert train.classes[:2] == ["airplane", "automobile"]
