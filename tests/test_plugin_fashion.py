"""pipeforge-fashion: the Fashion-MNIST MLP seed (001) as a recipe, run through the CLI on
generated IDX files in torchvision's layout.

The one-epoch run and the failed download go through the installed command; the others run the
same CLI in this process (`run_in_process`), so that each does not pay again for an interpreter
importing torch and torchvision."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import RECIPES, cli_env, run_in_process, run_pipeforge
from datagen import write_fashion_mnist

pytestmark = pytest.mark.slow  # trains through subprocesses: `-m "not slow"` leaves it out

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RECIPE = RECIPES / "fashion_mnist_mlp.toml"
# Every HTTP(S) request goes to a closed local port: "no network", quickly and the same on any
# machine (a test must never download the real 30 MB data set).
NO_NETWORK = {name: "http://127.0.0.1:9" for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns) for p in directory.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fashion") / "data"
    write_fashion_mnist(root, n_train=600, n_test=200, seed=0)
    return root


def test_recipe_validates():
    result = run_pipeforge("validate", RECIPE)
    assert result.returncode == 0, result.stderr
    assert "fashion.fashion_mnist" in result.stdout and "fashion.mlp" in result.stdout


def test_recipe_matches_the_seed():
    recipe = tomllib.loads(RECIPE.read_text())
    # Seed 001 ("PyTorch Pipeline"): datasets.FashionMNIST(root="data", download=True,
    # transform=ToTensor()); batch_size = 64; DataLoader without shuffle; NeuralNetwork
    # Flatten -> Linear(28*28, 512) -> ReLU -> Linear(512, 512) -> ReLU -> Linear(512, 10);
    # CrossEntropyLoss; SGD(lr=1e-3); epochs = 5, test() after every epoch.
    assert recipe["dataset"] == {"name": "fashion.fashion_mnist", "root": "data", "download": True}
    assert recipe["model"] == {"name": "fashion.mlp", "in_features": 784, "hidden": 512, "out_features": 10}
    assert recipe["loss"] == {"name": "cross_entropy"}
    assert recipe["optimizer"] == {"name": "sgd", "lr": 1e-3}
    trainer = recipe["trainer"]
    assert (trainer["epochs"], trainer["batch_size"]) == (5, 64)
    assert trainer["shuffle"] is False and trainer["drop_last"] is False
    assert {"name": "accuracy"} in recipe["metrics"]
    assert {"name": "tensorboard"} in recipe["callbacks"]


def test_one_epoch_run_leaves_the_data_untouched(data_root: Path, tmp_path: Path):
    before = snapshot(data_root)
    run_dir = tmp_path / "run"
    result = run_pipeforge(
        "run", RECIPE, "--run-dir", run_dir, "--set", f"dataset.root={data_root}", "--set", "trainer.epochs=1",
        env=cli_env(**NO_NETWORK),
    )
    assert result.returncode == 0, result.stderr
    for name in ("recipe.toml", "env.json", "metrics.jsonl", "model.pt"):
        assert (run_dir / name).is_file(), name
    rows = read_metrics(run_dir)
    assert len(rows) == 1 and set(rows[0]) >= {"train_loss", "test_loss", "test_accuracy"}
    assert 0.0 <= rows[0]["test_accuracy"] <= 1.0
    # download = true found the files and fetched nothing; nothing of the user's changed.
    assert snapshot(data_root) == before


def test_training_learns_on_generated_data(data_root: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    result = run_in_process(
        "run", RECIPE, "--run-dir", run_dir, "--set", f"dataset.root={data_root}", "--set", "dataset.download=false",
        "--set", "optimizer.lr=0.1", "--set", "trainer.epochs=4",
    )
    assert result.returncode == 0, result.stderr
    rows = read_metrics(run_dir)
    assert rows[-1]["test_accuracy"] > 0.6  # ten classes: chance is 0.1
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]


def test_images_are_what_totensor_gives(data_root: Path):
    from torchvision.datasets import FashionMNIST
    from torchvision.transforms import ToTensor

    from pipeforge import BuildContext
    from pipeforge_fashion.build import build_fashion_mnist
    from pipeforge_fashion.plugin import FashionMNISTParams

    data = build_fashion_mnist(
        FashionMNISTParams(root=str(data_root), download=False), BuildContext(registry=None, seed=0, device="cpu")
    )
    assert data.classes[0] == "T-shirt/top" and data.classes[9] == "Ankle boot" and len(data.classes) == 10
    assert len(data.splits["train"]) == 600 and len(data.splits["test"]) == 200
    reference = FashionMNIST(str(data_root), train=False, download=False, transform=ToTensor())
    for index in (0, 7, 199):
        image, label = data.splits["test"][index]
        expected_image, expected_label = reference[index]
        assert image.dtype == expected_image.dtype and image.shape == (1, 28, 28)
        assert (image == expected_image).all() and int(label) == expected_label


def test_missing_data_without_download_names_the_directory(tmp_path: Path):
    root = tmp_path / "nothing-here"
    result = run_in_process(
        "run", RECIPE, "--run-dir", tmp_path / "run", "--set", f"dataset.root={root}", "--set", "dataset.download=false",
    )
    assert result.returncode == 2
    assert str((root / "FashionMNIST" / "raw").resolve()) in result.stderr
    assert "train-images-idx3-ubyte" in result.stderr
    assert "Traceback" not in result.stderr
    assert not root.exists()


def test_failed_download_is_a_data_error(tmp_path: Path):
    # A process of its own: its proxy settings are read when it first opens a URL.
    root = tmp_path / "data"
    result = run_pipeforge(
        "run", RECIPE, "--run-dir", tmp_path / "run", "--set", f"dataset.root={root}",
        env=cli_env(**NO_NETWORK), timeout=120,
    )
    assert result.returncode == 2
    assert "downloading it failed" in result.stderr
    assert str((root / "FashionMNIST" / "raw").resolve()) in result.stderr
    assert "Traceback" not in result.stderr


def test_truncated_file_is_a_data_error(tmp_path: Path):
    raw = write_fashion_mnist(tmp_path / "data", n_train=50, n_test=20, seed=1)
    images = raw / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:5000])
    result = run_in_process(
        "run", RECIPE, "--run-dir", tmp_path / "run", "--set", f"dataset.root={tmp_path / 'data'}",
        "--set", "dataset.download=false",
    )
    assert result.returncode == 2
    assert f"cannot read Fashion-MNIST from {raw.resolve()}" in result.stderr
    assert "Traceback" not in result.stderr
