"""`pipeforge runs` and `pipeforge compare`: statuses read back from real run dirs, damaged and
foreign folders, recipe differences, metrics side by side, a sweep dir as a whole, `--json`,
`--plot` (a PNG opened and checked), and no torch imported."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import pipeforge
from conftest import cli_env
from pipeforge.cli import main
from pipeforge.plugins import discover
from pipeforge.rundir import RunDir
from pipeforge.runs import find_runs, read_run, runs_of

BASE = {
    "run": {"name": "t", "seed": 0},
    "dataset": {"name": "synthetic_classification", "n_train": 64, "n_val": 32, "features": 4},
    "model": {"name": "mlp", "in_features": 4, "hidden": [8]},
    "optimizer": {"name": "sgd", "lr": 0.1},
    "trainer": {"epochs": 3, "device": "cpu", "batch_size": 16},
    "callbacks": [],
}


class StopAfter:
    """Asks the run to stop, as Ctrl-C does, at the end of epoch `epoch`."""

    def __init__(self, epoch: int, stop: pipeforge.StopRequest) -> None:
        self.epoch, self.stop = epoch, stop

    @pipeforge.hookimpl
    def on_epoch_end(self, epoch):
        if epoch == self.epoch:
            self.stop.signal = 2


class FailAt:
    @pipeforge.hookimpl
    def on_epoch_end(self, epoch):
        if epoch == 2:
            raise RuntimeError("the disk caught fire")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """runs/: two finished runs, a failed one, an interrupted one, one killed outright, a sweep
    dir of two trials, a damaged run dir and a foreign folder."""
    root = tmp_path_factory.mktemp("runs")
    plugins = discover()
    pipeforge.run(BASE, run_dir=root / "a", plugins=plugins)
    pipeforge.run(BASE, overrides=["optimizer.lr=0.5", "model.hidden=[16]"], run_dir=root / "b", plugins=plugins)
    with pytest.raises(RuntimeError):
        pipeforge.run(BASE, run_dir=root / "c-failed", callbacks=[FailAt()], plugins=plugins)
    stop = pipeforge.StopRequest()
    with pytest.raises(pipeforge.Interrupted):
        pipeforge.run(BASE, run_dir=root / "d-interrupted", callbacks=[StopAfter(1, stop)], stop=stop,
                      plugins=plugins)
    for index, lr in enumerate([0.05, 0.2]):
        pipeforge.run(BASE, overrides=[f"optimizer.lr={lr}"], run_dir=root / "sweep" / f"trial-{index}",
                      plugins=plugins)
    (root / "sweep" / "sweep.jsonl").write_text("{}\n")  # a sweep's own files beside its trials
    # Killed by SIGKILL mid-run: env.json still says it has not ended, no model.pt, a cut line.
    shutil.copytree(root / "a", root / "e-killed")
    env = json.loads((root / "e-killed" / "env.json").read_text())
    (root / "e-killed" / "env.json").write_text(json.dumps({**env, "ended": None}))
    (root / "e-killed" / "model.pt").unlink()
    with open(root / "e-killed" / "metrics.jsonl", "a") as file:
        file.write('{"epoch": 4, "train_lo')
    (root / "foreign").mkdir()
    (root / "foreign" / "notes.txt").write_text("mine")
    (root / "damaged").mkdir()
    (root / "damaged" / "recipe.toml").write_bytes(b"\x00\xff binary")
    (root / "damaged" / "env.json").write_text("{not json")
    return root


def by_name(found):
    return {run.name: run for run in found}


def test_runs_reads_every_status_back(runs):
    found, skipped = find_runs(runs)
    status = {run.name: run.status for run in found}
    assert status == {"a": "finished", "b": "finished", "c-failed": "failed", "d-interrupted": "interrupted",
                      "e-killed": "interrupted", "sweep/trial-0": "finished", "sweep/trial-1": "finished",
                      "damaged": "damaged"}
    assert [(Path(entry.path).name, entry.reason) for entry in skipped] == [("foreign", "not a run dir (no recipe.toml)")]
    named = by_name(found)
    a = named["a"]
    history = [json.loads(line) for line in (runs / "a" / "metrics.jsonl").read_text().splitlines()]
    best = min(history, key=lambda row: row["val_loss"])
    assert (a.epochs, a.epochs_planned, a.best_metric) == (3, 3, "val_loss")  # the saver's default
    assert (a.best, a.best_epoch) == (best["val_loss"], best["epoch"]) and a.duration_s >= 0
    assert named["c-failed"].epochs == 2 and "the disk caught fire" in named["c-failed"].note
    assert named["d-interrupted"].epochs == 1 and named["d-interrupted"].note.startswith("stopped by SIGINT")
    assert named["e-killed"].epochs == 3 and "killed?" in named["e-killed"].note
    assert "1 unreadable line in metrics.jsonl" in named["e-killed"].note
    assert "recipe.toml cannot be read" in named["damaged"].note
    assert found[-1].name == "damaged"  # no start time: listed last


def test_a_run_holding_its_lock_is_running_and_a_resumed_one_finished(runs, tmp_path):
    shutil.copytree(runs / "d-interrupted", tmp_path / "d")
    with RunDir(tmp_path / "d").lock():
        assert read_run(tmp_path / "d", "d").status == "running"
    assert read_run(tmp_path / "d", "d").status == "interrupted"
    pipeforge.resume(tmp_path / "d")
    resumed = read_run(tmp_path / "d", "d")
    assert (resumed.status, resumed.epochs, resumed.note) == ("finished", 3, None)


def test_pipeforge_runs_text_and_json(runs, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["runs", str(runs)]) == 0
    text = capsys.readouterr().out
    for name, status in [("c-failed", "failed"), ("d-interrupted", "interrupted"), ("sweep/trial-1", "finished")]:
        assert any(name in line and status in line for line in text.splitlines()), text
    assert "best val_loss" in text and "3/3" in text and f"skipped {runs / 'foreign'}: not a run dir" in text
    assert main(["runs", str(runs), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert {row["name"]: row["status"] for row in document["runs"]}["e-killed"] == "interrupted"
    assert set(document["runs"][0]) == {"name", "path", "status", "started", "epochs", "epochs_planned",
                                        "best_metric", "best", "best_epoch", "duration_s", "note"}
    assert document["skipped"] == [{"path": str(runs / "foreign"), "reason": "not a run dir (no recipe.toml)"}]


def test_pipeforge_compare_text_and_json_with_a_sweep_as_a_whole(runs, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    assert main(["compare", str(runs / "a"), str(runs / "b"), str(runs / "sweep"), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    names = [Path(run["path"]).relative_to(runs).as_posix() for run in document["runs"]]
    assert names == ["a", "b", "sweep/trial-0", "sweep/trial-1"]
    assert document["differences"] == [{"key": "model.hidden", "values": [[8], [16], [8], [8]]},
                                       {"key": "optimizer.lr", "values": [0.1, 0.5, 0.05, 0.2]}]
    final_b = json.loads((runs / "b" / "metrics.jsonl").read_text().splitlines()[-1])
    assert document["runs"][1]["final"] == final_b and document["runs"][1]["status"] == "finished"
    assert main(["compare", str(runs / "a"), str(runs / "b")]) == 0
    text = capsys.readouterr().out
    assert "recipe differences" in text and "optimizer.lr" in text and "0.5" in text
    assert f"{final_b['val_accuracy']:.4g}" in text and "best val_loss" in text
    assert main(["compare", str(runs / "foreign")]) == 2
    assert "neither a run dir nor a folder of run dirs" in capsys.readouterr().err
    assert main(["runs", str(runs / "nothing-here")]) == 2


def test_compare_plot_draws_a_curve_per_run(runs, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    image_path = tmp_path / "curves.png"
    assert main(["compare", str(runs / "a"), str(runs / "b"), str(runs / "sweep"), "--plot", str(image_path)]) == 0
    assert f"wrote {image_path}" in capsys.readouterr().out
    with Image.open(image_path) as image:
        assert image.format == "PNG" and image.width >= 800 and image.height >= 500
        counts = {colour: count for count, colour in image.convert("RGB").getcolors(maxcolors=2**24)}
        area = image.width * image.height
    # matplotlib's first four cycle colours: each run's curves are drawn in its own colour.
    for colour in [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)]:
        assert counts.get(colour, 0) > 100, colour
    assert counts[(255, 255, 255)] < 0.97 * area and len(counts) > 20  # not a blank canvas
    # An existing file is never replaced.
    before = image_path.read_bytes()
    assert main(["compare", str(runs / "a"), "--plot", str(image_path)]) == 2
    assert "already exists" in capsys.readouterr().err and image_path.read_bytes() == before


def test_compare_plot_without_matplotlib_names_the_extra(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert main(["compare", str(runs / "a"), "--plot", str(tmp_path / "x.png")]) == 2
    assert 'pip install "pipeforge[plot]"' in capsys.readouterr().err and not (tmp_path / "x.png").exists()


@pytest.mark.slow
def test_runs_and_compare_import_no_torch(runs, tmp_path):
    for args, allowed in ([["runs", runs, "--json"], ()],
                          [["compare", runs / "a", runs / "sweep", "--plot", tmp_path / "c.png"], ("numpy",)]):
        result = subprocess.run([sys.executable, "-X", "importtime", "-m", "pipeforge", *map(str, args)],
                                capture_output=True, text=True, env=cli_env(), cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
        assert "pipeforge.runs" in imported
        heavy = {"torch", "torchvision", "tensorboard", "numpy"} - set(allowed)
        assert not {m for m in imported if m.split(".")[0] in heavy}, args


def test_runs_of_a_run_dir_is_that_run(runs):
    assert [run.name for run in runs_of([runs / "a"])] == [str(runs / "a")]
    assert [run.name for run in find_runs(runs / "sweep")[0]] == ["trial-0", "trial-1"]


def test_run_with_a_dict_leaves_the_dict_as_it_was(tmp_path):
    recipe = json.loads(json.dumps(BASE))
    pipeforge.run(recipe, overrides=["optimizer.lr=0.3", "trainer.epochs=1"], run_dir=tmp_path / "r")
    assert recipe == BASE
