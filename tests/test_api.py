"""The Python API: `pipeforge.run` / `resume` / `evaluate` / `predict` in-process, as from a notebook."""

from __future__ import annotations

import json
import logging
import signal
import sys

import pytest
import torch

import pipeforge
from conftest import RECIPES
from pipeforge import RecipeError, UsageError

QUICK = ["trainer.epochs=2", "dataset.n_train=256", "dataset.n_val=64", "callbacks=[]"]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default run dir is runs/<name>-<timestamp> under the cwd


def test_run_returns_the_history_and_writes_the_run_dir(tmp_path):
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    result = pipeforge.run(RECIPES / "quickstart.toml", overrides=QUICK)
    assert result.run_dir.resolve().parent == tmp_path / "runs" and (result.run_dir / "model.pt").is_file()
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert result.history == rows and [r["epoch"] for r in rows] == [1, 2]
    assert result.metrics == rows[-1] and result.metrics["val_accuracy"] > 0.5
    assert isinstance(result.state.model, torch.nn.Module)
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers  # none installed


def test_a_recipe_as_a_dict_and_a_chosen_run_dir(tmp_path):
    recipe = {
        "run": {"name": "in-python", "seed": 1},
        "dataset": {"name": "synthetic_classification", "n_train": 128, "n_val": 32, "features": 4},
        "model": {"name": "mlp", "in_features": 4, "hidden": [8]},
        "optimizer": {"name": "sgd", "lr": 0.1},
    }
    result = pipeforge.run(recipe, overrides=["trainer.epochs=2"], run_dir=tmp_path / "mine")
    assert result.run_dir == tmp_path / "mine" and len(result.history) == 2
    assert "epochs = 2" in (result.run_dir / "recipe.toml").read_text()


def test_bad_input_raises_typed_errors_and_never_exits(tmp_path):
    with pytest.raises(RecipeError, match="optimizer.lrr"):
        pipeforge.run(RECIPES / "quickstart.toml", overrides=["optimizer.lrr=0.1"])
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        pipeforge.run(RECIPES / "quickstart.toml", run_dir=taken)
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]


def test_resume_continues_and_evaluate_and_predict_read_the_run(tmp_path, caplog):
    first = pipeforge.run(RECIPES / "popularity_mlp.toml", overrides=["trainer.epochs=2", "callbacks=[]"])
    with caplog.at_level(logging.INFO, logger="pipeforge"):
        longer = pipeforge.resume(first.run_dir, overrides=["trainer.epochs=3"])
    assert [r["epoch"] for r in longer.history] == [1, 2, 3]
    assert any("resuming" in r.getMessage() for r in caplog.records)
    evaluation = pipeforge.evaluate(first.run_dir)
    split = evaluation.splits[0]
    assert evaluation.metrics[f"{split}_loss"] == pytest.approx(longer.metrics[f"{split}_loss"], rel=1e-5)
    predictions = pipeforge.predict(first.run_dir, ["[[0.5, 0.5]]"])
    assert len(predictions) == 1 and set(predictions[0].probabilities) == {"Not Popular", "Popular"}


def test_importing_pipeforge_imports_no_torch():
    import subprocess

    code = "import sys, pipeforge; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_overrides_apply_to_a_validated_recipe_too(tmp_path):
    from pipeforge.plugins import discover
    from pipeforge.recipe import load_recipe

    plugins = discover()
    recipe = load_recipe(RECIPES / "quickstart.toml", plugins.registry, QUICK)
    result = pipeforge.run(recipe, overrides=["trainer.epochs=1"], plugins=plugins)
    assert [r["epoch"] for r in result.history] == [1]
