"""`pipeforge sweep`: trials expanded and validated before anything trains (no torch), run in
worker processes, continued after Ctrl-C with the same results, and shared through an Optuna
storage by several processes without a trial running twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import cli_env, group_gone, run_pipeforge
from pipeforge.cli import main
from pipeforge.sweep import PRUNED_REASON, grid_flag, space_flag
from pipeforge.sweep_table import SweepSection

# Tiny and quick: 128 samples in batches of 16, two epochs; no TensorBoard.
BASE = """
callbacks = []

[run]
name = "tiny"
seed = 0

[dataset]
name = "synthetic_classification"
n_train = 128
n_val = 64
features = 4
classes = 2

[model]
name = "mlp"
in_features = 4
hidden = [8]

[optimizer]
name = "sgd"
lr = 0.1

[trainer]
epochs = 2
batch_size = 16
device = "cpu"
"""

GRID = """
[sweep]
monitor = "val_accuracy"
parallel = 2

[sweep.grid]
"optimizer.lr" = [0.02, 0.1, 0.3]
"model.hidden" = [[4], [8]]
"""


def recipe(tmp_path: Path, sweep: str = GRID, name: str = "sweep.toml") -> Path:
    path = tmp_path / name
    path.write_text(BASE + sweep)
    return path


def events(sweep_dir: Path) -> list[dict]:
    path = sweep_dir / "sweep.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# ------------------------------------------------------------------------------ before training


def test_an_invalid_trial_is_refused_before_anything_is_created(tmp_path, capsys):
    bad = GRID.replace('[[4], [8]]', '[[4], [-1]]').replace('"val_accuracy"', '"val_acuracy"')
    code = main(["sweep", str(recipe(tmp_path, bad)), "--sweep-dir", str(tmp_path / "out")])
    message = capsys.readouterr().err
    assert code == 2
    # Each bad trial is named with its values; the monitor typo is caught too, with a hint.
    for number, lr in ((1, 0.02), (3, 0.1), (5, 0.3)):
        assert f"trial-000{number} (optimizer.lr={lr}, model.hidden=[-1]): model.hidden[0]" in message
    assert "trial-0000" not in message
    # ... once, with the line it was written on.
    assert message.count("sweep.monitor (line 30): expected a key the run writes") == 1
    assert "did you mean 'val_accuracy'?" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("table, expected", [
    ('[sweep]\ntrials = 3\n[sweep.space]\n"optimizer.lr" = { log_uniform = [0.0, 1.0] }', "log_uniform: expected low > 0"),
    ('[sweep]\n[sweep.space]\n"optimizer.lr" = { uniform = [0.1, 1.0] }', "a random search needs trials = N"),
    ('[sweep]\ntrials = 3\n[sweep.grid]\n"optimizer.lr" = [0.1]', "a grid runs each of its 1 points once"),
    ('[sweep]\ntrials = 3\n[sweep.space]\n"optimizer.lr" = { uniform = [0.1, 1.0], int = [1, 2] }', "exactly one of"),
    ('[sweep]\nmonitor = "val_loss"\n[sweep.grid]\n"optimizer.lr" = [0.1]\n[sweep.space]\n"model.hidden" = { choice = [[4]] }',
     "a grid or a search, not both"),
])
def test_a_malformed_sweep_table_is_one_clear_message(tmp_path, capsys, table, expected):
    assert main(["sweep", str(recipe(tmp_path, table)), "--dry-run"]) == 2
    assert expected in capsys.readouterr().err


def test_command_line_grid_and_space_flags():
    assert grid_flag("optimizer.lr=0.01, 0.1,'a,b'") == ("optimizer.lr", [0.01, 0.1, "a,b"])
    assert grid_flag("model.hidden=[4,8],[16]") == ("model.hidden", [[4, 8], [16]])
    assert space_flag("optimizer.lr=log_uniform(1e-4, 0.1)") == ("optimizer.lr", {"log_uniform": [1e-4, 0.1]})
    assert space_flag("optimizer.name=choice(sgd,adam)") == ("optimizer.name", {"choice": ["sgd", "adam"]})


def test_random_trials_depend_only_on_the_seed_and_their_number():
    from pipeforge.sweep import expand

    space = {"optimizer.lr": {"log_uniform": [1e-4, 0.1]}, "model.hidden": {"int": [2, 5]},
             "optimizer.name": {"choice": ["sgd", "adam"]}}
    few = expand(SweepSection.model_validate({"space": space, "trials": 5, "seed": 3}))
    more = expand(SweepSection.model_validate({"space": space, "trials": 50, "seed": 3}))
    other = expand(SweepSection.model_validate({"space": space, "trials": 5, "seed": 4}))
    assert few == more[:5] and few != other  # more trials extend a search; they never change it
    for trial in more:
        assert 1e-4 <= trial.values["optimizer.lr"] <= 0.1 and trial.values["model.hidden"] in (2, 3, 4, 5)
    assert {t.values["model.hidden"] for t in more} == {2, 3, 4, 5}
    assert {t.values["optimizer.name"] for t in more} == {"sgd", "adam"}


def test_validating_1000_trials_imports_no_torch(tmp_path):
    """Every trial of a 1,000-point grid is validated without torch (the timing is a benchmark)."""
    lrs = ",".join(str(round(0.001 * (i + 1), 3)) for i in range(100))
    hidden = ",".join(f"[{h}]" for h in range(1, 11))
    code = ("import sys; from pipeforge.cli import main; "
            f"code = main(['sweep', {str(recipe(tmp_path))!r}, '--grid', 'optimizer.lr={lrs}', "
            f"'--grid', 'model.hidden={hidden}', '--dry-run']); "
            "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "ok, 1,000 trials (grid)" in done.stdout
    assert not (tmp_path / "sweeps").exists()


def test_optuna_pruning_stops_the_trial_through_a_stop_request(tmp_path):
    optuna = pytest.importorskip("optuna")
    from pipeforge.sweep_optuna import PruningReporter, open_storage

    storage = str(tmp_path / "study.journal")
    study = optuna.create_study(storage=open_storage(storage), study_name="s", direction="maximize")
    for value in (0.5, 0.6, 0.7, 0.8, 0.9):  # the median pruner waits for five finished trials
        good = study.ask()
        good.report(value, 1)
        study.tell(good, value)
    weak = study.ask()

    class State:
        stop_reason = None

        def request_stop(self, reason):
            self.stop_reason = reason

    state, reporter = State(), PruningReporter(storage, "s", weak._trial_id, "val_accuracy")
    reporter.on_epoch_end(state, 1, {"val_accuracy": 0.95})
    assert state.stop_reason is None  # better than the median so far: goes on
    reporter.on_epoch_end(state, 2, {"val_accuracy": 0.95})
    assert state.stop_reason is None  # no other trial reached epoch 2: nothing to compare
    other = study.ask()
    PruningReporter(storage, "s", other._trial_id, "val_accuracy").on_epoch_end(state, 1, {"val_accuracy": 0.1})
    assert state.stop_reason.startswith(PRUNED_REASON)


# ------------------------------------------------------------------------------ running


@pytest.mark.slow
def test_sigint_mid_sweep_then_again_equals_an_uninterrupted_sweep(tmp_path, killer_env):
    path = recipe(tmp_path, GRID.replace("[0.02, 0.1, 0.3]", "[0.02, 0.3]"))  # 4 trials
    reference = run_pipeforge("sweep", path, "--sweep-dir", tmp_path / "reference", "--quiet", cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr

    sweep_dir = tmp_path / "cut"
    # Slowed to 0.1 s a step by the killer plugin (16 steps a trial), in its own process group,
    # as a terminal's Ctrl-C reaches the sweep and its workers.
    proc = subprocess.Popen([sys.executable, "-m", "pipeforge", "sweep", str(path), "--sweep-dir", str(sweep_dir)],
                            env={**killer_env, "STEP_SLEEP": "0.1"}, cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        finished = {e["trial"] for e in events(sweep_dir) if e["status"] == "finished"}
        running = [d for d in sweep_dir.glob("trial-*") if (d / "started").exists() and d.name not in finished]
        if finished and running:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert f"pipeforge sweep --resume {sweep_dir}" in stderr
    assert group_gone(proc.pid, 10)
    first = events(sweep_dir)
    done_before = {e["trial"] for e in first if e["status"] == "finished"}
    cut = {e["trial"] for e in first if e["status"] == "interrupted"}
    assert done_before and cut and not done_before & cut

    again = run_pipeforge("sweep", "--resume", sweep_dir, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    later = events(sweep_dir)[len(first):]
    assert not {e["trial"] for e in later} & done_before  # finished trials are not run again
    assert cut <= {e["trial"] for e in later if e["status"] == "resumed"}  # cut ones go on from their checkpoints
    for trial in sorted((tmp_path / "reference").glob("trial-*")):
        mine = sweep_dir / trial.name / "metrics.jsonl"
        assert mine.read_text() == (trial / "metrics.jsonl").read_text(), trial.name
    assert len(list(sweep_dir.glob("trial-*"))) == 4
    assert "trial-0003" in again.stdout and "best: " in again.stdout


@pytest.mark.slow
def test_two_sweeps_share_one_optuna_study_and_run_disjoint_trials(tmp_path, killer_env):
    optuna = pytest.importorskip("optuna")
    path = recipe(tmp_path, '[sweep]\nmonitor = "val_accuracy"\n')
    storage = tmp_path / "study.journal"
    command = [sys.executable, "-m", "pipeforge", "sweep", str(path), "--space", "optimizer.lr=log_uniform(0.01,0.5)",
               "--sampler", "tpe", "--trials", "4", "--storage", str(storage), "--study", "shared", "--quiet"]
    procs = [subprocess.Popen([*command, "--sweep-dir", str(tmp_path / name)], env={**killer_env, "STEP_SLEEP": "0.02"},
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in ("a", "b")]
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr
    ran = {name: {d.name for d in (tmp_path / name).glob("trial-*")} for name in ("a", "b")}
    assert not ran["a"] & ran["b"]  # no trial ran in both processes
    study = optuna.load_study(study_name="shared", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(storage))))
    assert len(study.trials) >= 4
    assert sorted(ran["a"] | ran["b"]) == sorted(f"trial-{t.number:04d}" for t in study.trials)
    for trial in study.trials:
        assert trial.state.name == "COMPLETE"
        where = "a" if f"trial-{trial.number:04d}" in ran["a"] else "b"
        rows = [json.loads(line) for line in (tmp_path / where / f"trial-{trial.number:04d}" / "metrics.jsonl").read_text().splitlines()]
        assert trial.value == max(row["val_accuracy"] for row in rows)
        assert f"lr = {trial.params['optimizer.lr']!r}" in (tmp_path / where / f"trial-{trial.number:04d}" / "recipe.toml").read_text()


def test_the_schema_describes_the_sweep_table(tmp_path):
    import jsonschema
    import tomllib

    from pipeforge.plugins import discover
    from pipeforge.schema import recipe_schema

    validator = jsonschema.Draft202012Validator(recipe_schema(discover().registry))
    assert not list(validator.iter_errors(tomllib.loads(BASE + GRID)))
    typo = tomllib.loads(BASE + GRID.replace("parallel", "paralel"))
    assert any("paralel" in error.message for error in validator.iter_errors(typo))
    properties = recipe_schema(discover().registry)["$defs"]["SweepSection"]["properties"]
    assert all(field.get("description") for field in properties.values())


def test_a_search_optuna_draws_later_is_validated_at_every_edge(tmp_path, capsys):
    args = ["sweep", str(recipe(tmp_path, '[sweep]\nmonitor = "val_accuracy"\n')), "--sampler", "tpe", "--trials", "9",
            "--space", "optimizer.lr=uniform(-1,1)", "--space", "optimizer.name=choice(sgd,sgdd)", "--dry-run"]
    assert main(args) == 2
    message = capsys.readouterr().err
    assert "sweep.space edge (optimizer.lr=-1.0, optimizer.name=\"sgd\"): optimizer.lr" in message
    assert "sweep.space edge (optimizer.lr=-1.0, optimizer.name=\"sgdd\"): optimizer.name" in message


def test_a_sweep_dir_holds_one_sweep(tmp_path):
    from pipeforge.errors import UsageError
    from pipeforge.sweep import SweepDir

    data = {"run": {"name": "x"}, "sweep": {"grid": {"optimizer.lr": [0.1, 0.2]}, "parallel": 2}}
    SweepDir.open(tmp_path / "s", data, "header").release()
    changed = {**data, "sweep": {**data["sweep"], "parallel": 4}}  # how it runs may change
    held = SweepDir.open(tmp_path / "s", changed, "header")
    with pytest.raises(UsageError, match="in use by another pipeforge sweep"):
        SweepDir.open(tmp_path / "s", changed, "header")
    held.release()
    other = {**data, "sweep": {"grid": {"optimizer.lr": [0.3]}}}
    with pytest.raises(UsageError, match=r"holds a different sweep:\n  sweep.grid.optimizer.lr: \[0.1, 0.2\] -> \[0.3\]"):
        SweepDir.open(tmp_path / "s", other, "header")
    assert "parallel = 4" in (tmp_path / "s" / "sweep.toml").read_text()
