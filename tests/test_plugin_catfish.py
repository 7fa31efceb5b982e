"""End-to-end tests of the catfish plugin (seed 003) through the `pipeforge` command.

The trained run and a prediction go through the installed command; the other runs run the same
CLI in this process (`run_in_process`), so that each does not pay again for an interpreter
importing torch and torchvision."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
from conftest import RECIPES, run_in_process, run_pipeforge
from datagen import write_image_folder

pytestmark = pytest.mark.slow  # trains through subprocesses: `-m "not slow"` leaves it out

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RECIPE = RECIPES / "catfish_simplenet.toml"
EPOCHS = 5  # the generated colours separate within a few Adam steps (one step per epoch here)


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under root, by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def run(run_dir: Path, root: Path, *extra: str, in_process: bool = True):
    return (run_in_process if in_process else run_pipeforge)(
        "run", RECIPE, "--run-dir", run_dir, "--set", f"dataset.root={root}", *extra,
        cwd=run_dir.parent,
    )


@pytest.fixture
def folder(tmp_path: Path):
    """cat/fish images in train/val/test, mixed sizes and modes, with a truncated JPEG and a
    text file named .jpg in train and in val."""
    return write_image_folder(tmp_path / "catfish")


def test_recipe_validates():
    result = run_pipeforge("validate", RECIPE)
    assert result.returncode == 0, result.stderr
    assert "catfish.image_folder" in result.stdout


def test_recipe_hyperparameters_match_the_seed():
    recipe = tomllib.loads(RECIPE.read_text())
    # Seed 003 ("Basic Training Loop With Pytorch"): DataLoader(batch_size=64) without shuffle,
    # optim.Adam(lr=0.001), nn.CrossEntropyLoss(), train(..., epochs=20), SimpleNet with
    # Linear(12288, 84), Linear(84, 50), Linear(50, 2), and the transforms below.
    assert recipe["trainer"]["batch_size"] == 64
    assert recipe["trainer"]["shuffle"] is False
    assert recipe["trainer"]["epochs"] == 20
    assert recipe["optimizer"] == {"name": "adam", "lr": 0.001}
    assert recipe["loss"] == {"name": "cross_entropy"}
    assert recipe["model"] == {"name": "catfish.simplenet", "in_features": 12288}
    assert recipe["dataset"]["transforms"] == [
        {"name": "convert", "mode": "RGB"},
        {"name": "resize", "size": [64, 64]},
        {"name": "to_tensor"},
        {"name": "normalize", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    ]
    assert recipe["dataset"]["splits"] == ["train", "val", "test"]
    # The seed validated on the test loader by mistake; the recipe evaluates val.
    assert recipe["trainer"]["eval_splits"] == ["val"]
    assert {"name": "accuracy"} in recipe["metrics"]
    assert {"name": "tensorboard"} in recipe["callbacks"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One EPOCHS-long run of the recipe on a fresh folder, with the folder's hashes from before.

    Each split also holds an empty hidden folder, which must not count as a class."""
    base = tmp_path_factory.mktemp("trained")
    info = write_image_folder(base / "catfish")
    for split in info.splits:  # what a notebook leaves behind; not a class
        (info.root / split / ".ipynb_checkpoints").mkdir()
    before = snapshot(info.root)
    result = run(base / "run", info.root, "--set", f"trainer.epochs={EPOCHS}", in_process=False)
    return info, before, result, base / "run"


def test_run_learns_skips_corrupt_images_and_never_touches_the_folder(trained):
    folder, before, result, run_dir = trained

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    for name in ("recipe.toml", "env.json", "metrics.jsonl", "model.pt", "skipped_files.txt"):
        assert (run_dir / name).is_file(), name
    rows = metrics(run_dir)
    assert [r["epoch"] for r in rows] == list(range(1, EPOCHS + 1))
    assert {"train_loss", "val_loss", "val_accuracy"} <= set(rows[-1])
    assert "test_loss" not in rows[-1]  # test is held out, as the recipe says
    assert rows[-1]["val_accuracy"] > 0.8
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]
    # Exactly the corrupt files are listed, each with a reason, and the console says how many.
    listed = dict(line.split("\t", 1) for line in (run_dir / "skipped_files.txt").read_text().splitlines())
    assert sorted(listed) == [str(p) for p in folder.corrupt]
    assert all(reason.strip() for reason in listed.values())
    assert re.search(rf"skipped {len(folder.corrupt)}\b", result.stdout + result.stderr)
    # The seed deletes corrupt images; we must leave every file as it was, byte for byte.
    assert snapshot(folder.root) == before
    assert all(p.exists() for p in folder.corrupt)


def test_in_memory_gives_the_same_run(tmp_path, trained):
    folder, _, lazy, lazy_dir = trained
    cached = run(tmp_path / "cached", folder.root, "--set", f"trainer.epochs={EPOCHS}", "--set", "dataset.in_memory=true")
    assert lazy.returncode == 0 and cached.returncode == 0, lazy.stderr + cached.stderr
    for a, b in zip(metrics(lazy_dir), metrics(tmp_path / "cached"), strict=True):
        assert a.keys() == b.keys()
        assert all(a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6) for k in a)


def test_missing_root_is_a_clear_error(tmp_path):
    missing = tmp_path / "no-such-folder"
    result = run(tmp_path / "run", missing)
    assert result.returncode == 2
    assert str(missing) in result.stderr
    assert "does not exist" in result.stderr
    assert "root/<split>/<class>/" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_split_is_named_and_can_be_left_out(tmp_path, folder):
    shutil.rmtree(folder.root / "test")
    result = run(tmp_path / "run", folder.root)
    assert result.returncode == 2
    assert str(folder.root / "test") in result.stderr
    assert "Traceback" not in result.stderr

    result = run(tmp_path / "run2", folder.root, "--set", 'dataset.splits=["train", "val"]', "--set", "trainer.epochs=1")
    assert result.returncode == 0, result.stderr


def test_empty_class_folder_is_a_clear_error(tmp_path, folder):
    for split in ("train", "val", "test"):
        (folder.root / split / "dog").mkdir()
    result = run(tmp_path / "run", folder.root)
    assert result.returncode == 2
    assert str(folder.root / "train" / "dog") in result.stderr
    assert "no image files" in result.stderr
    assert "Traceback" not in result.stderr


def test_wrong_image_size_names_in_features(tmp_path, folder):
    result = run(
        tmp_path / "run", folder.root,
        "--set", 'dataset.transforms=[{name="convert"}, {name="resize", size=[32, 32]}, {name="to_tensor"}]',
    )
    assert result.returncode == 2
    assert "model.in_features=3072" in result.stderr
    assert "Traceback" not in result.stderr


def test_predict_names_cat_or_fish_from_an_image_path(trained, tmp_path):
    folder, _, result, run_dir = trained
    assert result.returncode == 0, result.stderr
    tests = [p for p in folder.good if "/test/" in str(p)]
    cats = [p for p in tests if p.parent.name == "cat"][:3]
    fishes = [p for p in tests if p.parent.name == "fish"][:3]
    predicted = run_pipeforge("predict", run_dir, *cats, *fishes)
    assert predicted.returncode == 0, predicted.stderr
    names = predicted.stdout.split()
    assert [n for n in names if n in ("cat", "fish")] == ["cat"] * 3 + ["fish"] * 3
    corrupt = run_in_process("predict", run_dir, folder.corrupt[0])
    assert corrupt.returncode == 2 and str(folder.corrupt[0]) in corrupt.stderr
    assert "Traceback" not in corrupt.stderr
