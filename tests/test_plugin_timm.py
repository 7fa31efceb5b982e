"""`timm.model` against the real timm: the shipped names list is `timm.list_models()` of the
pinned timm; `validate` refuses an unknown architecture with a suggestion and imports no torch;
a small timm model learns the cat/fish image folder; weights that cannot be fetched are one
clear error."""

from __future__ import annotations

import subprocess
import sys

import pytest

import pipeforge
from conftest import RECIPES, cli_env
from datagen import write_image_folder

RECIPE = RECIPES / "catfish_timm.toml"

VALIDATE_NO_TORCH = """
import contextlib, io, sys
from pipeforge.cli import main
err = io.StringIO()
with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
    code = main(["validate", sys.argv[1], "--set", "model.architecture=resnet5O"])
print(code, "torch" in sys.modules, "timm" in sys.modules)
print(err.getvalue())
"""


def test_an_unknown_architecture_is_refused_at_validate_without_torch():
    result = subprocess.run([sys.executable, "-c", VALIDATE_NO_TORCH, str(RECIPE)], capture_output=True,
                            text=True, env=cli_env())
    first, message = result.stdout.split("\n", 1)
    assert first == "2 False False", result.stdout + result.stderr
    assert "model.architecture" in message and "did you mean 'resnet50'" in message


@pytest.mark.slow  # imports timm (seconds)
def test_the_shipped_names_are_those_of_the_pinned_timm():
    import timm

    from pipeforge_timm.names import TIMM_VERSION, architectures

    assert timm.__version__ == TIMM_VERSION
    assert architectures() == frozenset(timm.list_models())


@pytest.mark.slow  # trains a convolutional net on images
def test_a_small_timm_model_learns_cat_fish(tmp_path):
    folder = write_image_folder(tmp_path / "catfish", per_class=8)
    result = pipeforge.run(RECIPE, run_dir=tmp_path / "run", overrides=[
        f"dataset.root={folder.root}", "model.architecture=test_resnet", "trainer.epochs=4",
        "trainer.batch_size=16", "optimizer.lr=0.01",
        "dataset.transforms.1.size=[32, 32]"])
    history = result.history
    assert type(result.state.model).__module__.startswith("timm.")
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["val_accuracy"] > 0.8, history  # as the catfish seed's own test asks; chance is 0.5


@pytest.mark.slow  # imports timm (seconds)
def test_pretrained_weights_that_cannot_be_fetched_are_one_clear_error(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # the cache only, at once
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    recipe = {"run": {"name": "pretrained"},
              "dataset": {"name": "synthetic_classification", "n_train": 16, "n_val": 8},
              "model": {"name": "timm.model", "architecture": "test_resnet", "pretrained": True},
              "optimizer": {"name": "sgd", "lr": 0.1}, "callbacks": []}
    with pytest.raises(pipeforge.PluginError, match=r"pretrained weights of 'test_resnet' could not be loaded.*"
                                                      r"model\.pretrained = false"):
        pipeforge.run(recipe, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing trained: nothing left behind
