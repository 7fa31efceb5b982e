"""The built-in `csv` callback: one row per epoch, the header from the keys, and exactly the
rows of metrics.jsonl after a kill -9 and a resume (end to end through the installed command)."""

from __future__ import annotations

import csv
import json
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest

import pipeforge
from conftest import run_pipeforge
from pipeforge.builtin.csv_logger import CSVLogger, CSVParams
from pipeforge.cli import main

RECIPE = {
    "run": {"name": "csv", "seed": 3},
    "dataset": {"name": "synthetic_classification", "n_train": 64, "n_val": 32, "features": 4},
    "model": {"name": "mlp", "in_features": 4, "hidden": [8]},
    "optimizer": {"name": "sgd", "lr": 0.1},
    "trainer": {"epochs": 2, "batch_size": 16, "eval_every_steps": 2},
    "callbacks": [{"name": "csv"}],
}


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def epoch_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if "step" not in row]


def as_text(rows: list[dict]) -> list[dict[str, str]]:
    return [{key: str(value) for key, value in row.items()} for row in rows]


def test_one_row_per_epoch_with_the_keys_as_header(tmp_path):
    result = pipeforge.run(RECIPE, run_dir=tmp_path / "run")
    rows = read_csv(result.run_dir / "metrics.csv")
    expected = epoch_rows(result.run_dir)  # mid-epoch evaluations (with a "step") are left out
    assert len(result.history) > len(expected) == 2
    assert list(rows[0]) == list(expected[0]) == ["epoch", "train_loss", "val_loss", "val_accuracy", "lr"]
    assert rows == as_text(expected)  # every value as Python writes it: floats read back exactly


def test_a_new_key_widens_the_header_and_keeps_every_row(tmp_path):
    state = SimpleNamespace(run_dir=tmp_path, history=[])
    logger = CSVLogger(CSVParams(filename="log.csv"))
    logger.on_fit_start(state=state)
    assert not (tmp_path / "log.csv").exists()  # nothing until the first epoch
    for row in ({"epoch": 1, "train_loss": 0.5}, {"epoch": 2, "train_loss": 0.25, "grad_norm": 1.5},
                {"epoch": 3, "train_loss": 0.125}):
        state.history.append(row)
        logger.on_epoch_end(state=state, metrics=row)
    assert (tmp_path / "log.csv").read_text() == (
        "epoch,train_loss,grad_norm\n1,0.5,\n2,0.25,1.5\n3,0.125,\n")


@pytest.mark.parametrize("filename", ["../x.csv", "sub/x.csv", "x.txt", ".hidden.csv"])
def test_the_file_name_is_checked_at_validate(filename, tmp_path, capsys):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[dataset]\nname = "synthetic_classification"\n[model]\nname = "mlp"\nin_features = 16\n'
                      f'[optimizer]\nname = "sgd"\nlr = 0.1\n[[callbacks]]\nname = "csv"\nfilename = "{filename}"\n')
    assert main(["validate", str(recipe)]) == 2
    assert "callbacks[0].filename" in capsys.readouterr().err


@pytest.mark.slow
def test_kill_9_after_an_uncheckpointed_epoch_then_resume(tmp_path, killer_env):
    recipe = tmp_path / "csv.toml"
    recipe.write_text(
        '[run]\nname = "csv"\nseed = 3\n'
        '[dataset]\nname = "synthetic_classification"\nn_train = 64\nn_val = 32\nfeatures = 4\n'
        '[model]\nname = "mlp"\nin_features = 4\nhidden = [8]\n'
        '[optimizer]\nname = "sgd"\nlr = 0.1\n'
        '[trainer]\nepochs = 3\nbatch_size = 16\ncheckpoint_every_epochs = 1\n'
        '[[callbacks]]\nname = "csv"\n')
    run_dir = tmp_path / "run"
    # Killed in epoch 2's on_epoch_end: its row is in metrics.csv, its checkpoint never written.
    killed = run_pipeforge("run", recipe, "--run-dir", run_dir, "--quiet", cwd=tmp_path,
                           env={**killer_env, "KILL_AFTER_EPOCH": "2"})
    assert killed.returncode == -signal.SIGKILL
    assert [row["epoch"] for row in read_csv(run_dir / "metrics.csv")] == ["1", "2"]
    pipeforge.resume(run_dir)  # in-process: the kill is what needs a process of its own
    rows = read_csv(run_dir / "metrics.csv")
    assert [row["epoch"] for row in rows] == ["1", "2", "3"]
    assert rows == as_text(epoch_rows(run_dir))
