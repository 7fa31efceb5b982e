"""The `pipeforge` command end to end, called through subprocess as a user calls it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import jsonschema
import pytest

from conftest import RECIPES, ROOT, cli_env, run_in_process, run_pipeforge

QUICKSTART = RECIPES / "quickstart.toml"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    run_dir = tmp_path_factory.mktemp("runs") / "quick"
    result = run_pipeforge("run", QUICKSTART, "--run-dir", run_dir, cwd=run_dir.parent)
    return result, run_dir


def test_run_writes_every_file(quick_run):
    result, run_dir = quick_run
    assert result.returncode == 0, result.stderr
    names = {p.name for p in run_dir.iterdir()}
    assert {"recipe.toml", "env.json", "metrics.jsonl", "tensorboard", "model.pt"} <= names
    assert any((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    env = json.loads((run_dir / "env.json").read_text())
    assert env["seed"] == 0 and env["pipeforge"] == "0.1.0" and env["torch"].startswith("2.14")
    assert any(p["distribution"] == "pipeforge" for p in env["plugins"])
    assert f"run dir: {run_dir}" in result.stdout


def test_metrics_show_loss_falling_and_learning(quick_run):
    _, run_dir = quick_run
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]
    assert {"train_loss", "val_loss", "val_accuracy"} <= set(rows[0])
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] * 0.8
    assert rows[-1]["val_accuracy"] > 0.6  # three classes: chance is 1/3


def test_resolved_recipe_reruns_identically(quick_run, tmp_path):
    _, run_dir = quick_run
    resolved = tomllib.loads((run_dir / "recipe.toml").read_text())
    assert resolved["optimizer"]["momentum"] == 0.9 and resolved["trainer"]["epochs"] == 5
    # In this process (the same CLI code, no second torch start-up): the same numbers, too.
    again = run_in_process("run", run_dir / "recipe.toml", "--run-dir", tmp_path / "again", "--quiet")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again" / "metrics.jsonl").read_text() == (run_dir / "metrics.jsonl").read_text()


def test_existing_run_dir_is_refused_and_untouched(quick_run):
    _, run_dir = quick_run
    before = snapshot(run_dir)
    result = run_pipeforge("run", QUICKSTART, "--run-dir", run_dir)
    assert result.returncode == 2
    assert "already exists and is not empty" in result.stderr and "Traceback" not in result.stderr
    assert snapshot(run_dir) == before


def test_bad_recipe_exits_2_without_traceback_or_run_dir(tmp_path, pipeforge):
    bad = tmp_path / "bad.toml"
    bad.write_text(QUICKSTART.read_text().replace("lr = 0.1", "lrr = 0.1"))
    for command in (["validate", bad], ["run", bad, "--run-dir", tmp_path / "never"]):
        result = pipeforge(*command)
        assert result.returncode == 2, result.stderr
        assert "optimizer.lrr" in result.stderr and "did you mean 'lr'?" in result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "never").exists()


def test_validate_ok_and_set_override(pipeforge):
    ok = pipeforge("validate", QUICKSTART, "--set", "trainer.epochs=2")
    assert ok.returncode == 0 and "ok" in ok.stdout
    bad = pipeforge("validate", QUICKSTART, "--set", "trainer.epochs=two")
    assert bad.returncode == 2 and "trainer.epochs" in bad.stderr


def test_missing_recipe_file(pipeforge, tmp_path):
    result = pipeforge("validate", tmp_path / "nope.toml")
    assert result.returncode == 2 and "nope.toml" in result.stderr and "Traceback" not in result.stderr


def test_list_plugins_text_and_json(pipeforge):
    text = pipeforge("list-plugins")
    assert text.returncode == 0 and "builtin" in text.stdout and "pipeforge" in text.stdout
    data = json.loads(pipeforge("list-plugins", "--json").stdout)
    builtin = next(p for p in data["plugins"] if p["name"] == "builtin")
    assert builtin["distribution"] == "pipeforge" and builtin["version"] == "0.1.0"
    assert builtin["status"] == "ok"
    assert "sgd" in builtin["components"]["optimizer"] and "accuracy" in builtin["components"]["metric"]


def test_show_lists_params(pipeforge):
    result = pipeforge("show", "sgd")
    assert result.returncode == 0
    for needle in ("momentum", "float", "0.01", "Learning rate"):
        assert needle in result.stdout
    unknown = pipeforge("show", "sgdd")
    assert unknown.returncode == 2 and "did you mean 'sgd'?" in unknown.stderr


def test_help_and_version_on_every_command(pipeforge):
    assert "pipeforge 0.1.0" in pipeforge("--version").stdout
    for command in ("run", "validate", "list-plugins", "show", "schema"):
        result = pipeforge(command, "--help")
        assert result.returncode == 0 and "usage: pipeforge" in result.stdout
    assert pipeforge("frobnicate").returncode == 2


def test_schema_validates_bundled_recipes_and_rejects_typos(pipeforge, tmp_path):
    out = tmp_path / "schema.json"
    assert pipeforge("schema", "-o", out).returncode == 0
    schema = json.loads(out.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    recipes = sorted(RECIPES.glob("*.toml"))
    assert recipes
    for recipe in recipes:
        errors = list(validator.iter_errors(tomllib.loads(recipe.read_text())))
        assert not errors, f"{recipe.name}: {errors[0].message}"
    typo = tomllib.loads(QUICKSTART.read_text())
    typo["optimizer"]["lrr"] = typo["optimizer"].pop("lr")
    assert not validator.is_valid(typo)
    typo_top = tomllib.loads(QUICKSTART.read_text())
    typo_top["trainer"]["epoch"] = 3
    assert not validator.is_valid(typo_top)
    scheduled = tomllib.loads(QUICKSTART.read_text())
    scheduled["scheduler"] = {"name": "cosine", "interval": "step", "warmup_ratio": 0.1, "eta_min": 0.0}
    scheduled["trainer"].update(accumulate_grad_batches=2, ema_decay=0.9, max_time="1h")
    scheduled["callbacks"] = [{"name": "early_stopping", "patience": 2}]
    assert validator.is_valid(scheduled), [e.message for e in validator.iter_errors(scheduled)]
    scheduled["scheduler"]["intervall"] = "step"
    assert not validator.is_valid(scheduled)
    again = pipeforge("schema", "-o", out)  # never replaces a file
    assert again.returncode == 2 and "already exists" in again.stderr and json.loads(out.read_text()) == schema


def test_python_dash_m_is_the_same_command(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pipeforge", "validate", QUICKSTART],
                            capture_output=True, text=True, env=cli_env(), cwd=tmp_path)
    assert result.returncode == 0 and "ok" in result.stdout


# The torch catalog's options in one recipe: Muon with per-module lr and no_decay, balanced class
# weights, a scheduler behind a warm-up (tests/test_catalog.py trains it).
CATALOG = ROOT / "tests" / "data" / "catalog.toml"


@pytest.mark.parametrize("args", [["--help"], ["validate", str(QUICKSTART)], ["validate", str(CATALOG)],
                                  ["list-plugins"], ["schema"], ["show", "sgd"], ["show", "muon"]])
def test_control_plane_imports_no_torch(args, tmp_path):
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "pipeforge", *args],
                            capture_output=True, text=True, env=cli_env(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "pipeforge.cli" in imported
    assert not {m for m in imported if m.split(".")[0] in ("torch", "torchvision", "tensorboard", "numpy")}


def test_keyboard_interrupt_exits_130(tmp_path):
    # A long run, interrupted with SIGINT once it has started training.
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeforge", "run", QUICKSTART, "--run-dir", run_dir,
         "--set", "trainer.epochs=100000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=tmp_path,
    )
    deadline = time.monotonic() + 60
    while not (run_dir / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(2)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr


@pytest.mark.slow  # trains through a subprocess
def test_failed_run_leaves_no_half_made_run_dir(tmp_path, pipeforge):
    # in_features does not match the data: the first step fails with a shape error.
    args = ["run", QUICKSTART, "--set", "model.in_features=5"]
    created = run_in_process(*args, "--run-dir", tmp_path / "new", cwd=tmp_path)
    assert created.returncode == 1
    assert "RuntimeError" in created.stderr and "--debug" in created.stderr and "Traceback" not in created.stderr
    assert not (tmp_path / "new").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    again = run_in_process(*args, "--run-dir", mine, cwd=tmp_path)
    assert again.returncode == 1 and mine.is_dir() and not any(mine.iterdir())
    traced = pipeforge("--debug", *args, "--run-dir", tmp_path / "debug")  # a process: the traceback on its stderr
    assert traced.returncode == 1 and "Traceback" in traced.stderr
