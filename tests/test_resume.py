"""Runs you can trust: kill at any point, resume, and end bitwise where an unbroken run ends."""

from __future__ import annotations

import json
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import cli_env, run_in_process, run_pipeforge, start_slow_run
from pipeforge import checkpoint
from pipeforge.errors import CheckpointError

pytestmark = pytest.mark.slow  # subprocess-heavy: `-m "not slow"` leaves it out

# Runs that are killed or signalled are `pipeforge` processes; the reference run and the
# resumes that complete a run train in this process (`run_in_process`: the same CLI code, without
# a new interpreter importing torch), which is what a test pays for most.

# Dropout makes the model draw random numbers, so resuming must restore the RNG exactly.
RECIPE = """
[run]
name = "resume"
seed = 7

[dataset]
name = "synthetic_classification"
n_train = 500
n_val = 100
features = 8
classes = 3

[model]
name = "mlp"
in_features = 8
hidden = [32, 32]
dropout = 0.2

[optimizer]
name = "adam"
lr = 0.01

[scheduler]
name = "step_lr"
step_size = 2
gamma = 0.5

[trainer]
epochs = 4
batch_size = 16
checkpoint_every_steps = 5

[[callbacks]]
name = "tensorboard"
"""

@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "resume.toml"
    path.write_text(RECIPE)
    return path


@pytest.fixture(scope="module")
def reference(recipe, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    result = run_in_process("run", recipe, "--run-dir", run_dir, "--quiet")
    assert result.returncode == 0, result.stderr
    return run_dir


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "model.pt", weights_only=True)


def assert_same_run(run_dir: Path, reference: Path) -> None:
    mine, theirs = weights(run_dir), weights(reference)
    assert mine.keys() == theirs.keys()
    for key in mine:
        assert torch.equal(mine[key], theirs[key]), f"{key} differs"
    assert (run_dir / "metrics.jsonl").read_text() == (reference / "metrics.jsonl").read_text()


def test_reference_run_checkpoints(reference):
    files = sorted(p.name for p in (reference / "checkpoints").iterdir())
    # 500 samples / 16 = 32 steps an epoch, 128 in all; the last 2 kept, plus best.
    assert files == ["best.pt", "step-00000125.pt", "step-00000128.pt"]
    saved = checkpoint.load(reference / "checkpoints" / "step-00000128.pt")
    assert saved.epochs_done == 4 and saved.global_step == 128 and len(saved.history) == 4
    best = checkpoint.load(reference / "checkpoints" / "best.pt")
    assert best.best == min(row["val_loss"] for row in saved.history)


@pytest.mark.parametrize("kill", [{"KILL_AT_STEP": "43"}, {"KILL_AT_STEP": "50"}, {"KILL_AFTER_EPOCH": "2"}],
                         ids=["mid-epoch-between-checkpoints", "mid-epoch-on-checkpoint-step", "between-epochs"])
def test_sigkill_then_resume_is_bitwise_identical(kill, recipe, reference, killer_env, tmp_path):
    run_dir = tmp_path / "run"
    killed = run_pipeforge("run", recipe, "--run-dir", run_dir, "--quiet", env={**killer_env, **kill})
    assert killed.returncode == -signal.SIGKILL
    assert not (run_dir / "model.pt").exists()
    resumed = run_in_process("run", "--resume", run_dir, "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(run_dir, reference)


def test_time_based_checkpoints_come_mid_epoch_and_resume_exactly(recipe, reference, killer_env, tmp_path):
    """trainer.checkpoint_every_s: a checkpoint once that long has passed, checked after every
    step (so within epochs too); SIGKILL after some of them, then resume: the same run."""
    timed = tmp_path / "timed.toml"
    timed.write_text(RECIPE.replace("checkpoint_every_steps = 5\n", "checkpoint_every_s = 0.1\nkeep_checkpoints = 1000\n"))
    run_dir = tmp_path / "run"
    # 10 ms a step: by step 50 (epoch 2 of 32-step epochs) at least 0.5 s have passed.
    killed = run_pipeforge("run", timed, "--run-dir", run_dir, "--quiet",
                           env={**killer_env, "KILL_AT_STEP": "50", "STEP_SLEEP": "0.01"})
    assert killed.returncode == -signal.SIGKILL
    steps = [int(path.stem.split("-")[1]) for path in (run_dir / "checkpoints").glob("step-*.pt")]
    assert len(steps) >= 2 and max(steps) <= 50
    assert any(step % 32 for step in steps), steps  # not only at epoch ends
    resumed = run_pipeforge("run", "--resume", run_dir, "--quiet", env=killer_env)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(run_dir, reference)


def test_best_epoch_not_checkpointed_is_kept_for_best_pt(tmp_path):
    """With the default cadence a short run checkpoints only at its end; best.pt still holds
    the best epoch, exactly as a run checkpointing every epoch writes it."""
    from conftest import RECIPES

    runs = {}
    for every in (0, 1):
        runs[every] = tmp_path / f"every-{every}"
        result = run_pipeforge("run", RECIPES / "quickstart.toml", "--run-dir", runs[every], "--quiet",
                               "--set", f"trainer.checkpoint_every_epochs={every}")
        assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in (runs[0] / "metrics.jsonl").read_text().splitlines()]
    best_epoch = min(rows, key=lambda row: row["val_loss"])["epoch"]
    assert best_epoch < len(rows), "the test needs a best epoch that is not the last"
    assert sorted(p.name for p in (runs[0] / "checkpoints").iterdir()) == ["best.pt", "step-00000160.pt"]
    kept, linked = (checkpoint.load(run / "checkpoints" / "best.pt") for run in (runs[0], runs[1]))
    assert kept.epochs_done == linked.epochs_done == best_epoch
    assert kept.best == linked.best == rows[best_epoch - 1]["val_loss"]
    assert same(kept.model, linked.model) and same(kept.optimizer, linked.optimizer)
    assert kept.history == linked.history


def same(a, b) -> bool:
    """Nested dicts/lists of tensors and plain values, equal bit for bit."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def test_kill_at_random_moments_including_checkpoint_writes(recipe, reference, tmp_path):
    """Checkpoint every step and SIGKILL at arbitrary times: every kill point must resume."""
    run_dir = tmp_path / "run"
    args = ["--set", "trainer.checkpoint_every_steps=1", "--quiet"]
    command = ["run", recipe, "--run-dir", run_dir, *args]
    for delay in (0.05, 0.13, 0.21):
        proc = subprocess.Popen([sys.executable, "-m", "pipeforge", *map(str, command)],
                                env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while proc.poll() is None and not any((run_dir / "checkpoints").glob("step-*.pt")) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(delay)
        proc.kill()
        assert proc.wait() == -signal.SIGKILL, "the run ended before the kill landed"
        assert not (run_dir / "model.pt").exists()
        command = ["run", "--resume", run_dir, *args]
    final = run_in_process(*command)  # the killed resumes above were processes
    assert final.returncode == 0, final.stderr
    # checkpoint_every_steps may change on resume, and changes nothing the run computes.
    assert_same_run(run_dir, reference)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_checkpoints_and_exits_then_resume_completes(sig, code, recipe, reference, killer_env, tmp_path):
    run_dir = tmp_path / "run"
    # 50 ms a step: the whole run would take over 6 s, and the signal comes after epoch 1.
    proc = start_slow_run(recipe, run_dir, killer_env, step_sleep=0.05, until=run_dir / "metrics.jsonl")
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert f"Resume with: pipeforge run --resume {run_dir}" in stderr and "Traceback" not in stderr
    assert checkpoint.latest_valid(run_dir / "checkpoints") is not None
    assert not (run_dir / "model.pt").exists()
    resumed = run_in_process("run", "--resume", run_dir, "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(run_dir, reference)


def test_second_signal_exits_at_once(recipe, killer_env, tmp_path):
    run_dir = tmp_path / "run"
    # 2 s a step: the first SIGTERM waits for the step to end; the second must not.
    proc = start_slow_run(recipe, run_dir, killer_env, step_sleep=2, until=run_dir / "started")
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    # Exited during the step the first signal waits for: no stop checkpoint was written.
    assert proc.returncode == 143
    assert "checkpoint written" not in stderr and not checkpoint.step_files(run_dir / "checkpoints")


def test_resume_refuses_a_changed_recipe_and_allows_more_epochs(reference, tmp_path):
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(reference, run_dir)
    before = (run_dir / "recipe.toml").read_text()
    refused = run_in_process("run", "--resume", run_dir, "--set", "optimizer.lr=0.5")
    assert refused.returncode == 2
    assert "optimizer.lr: 0.01 -> 0.5" in refused.stderr and "Traceback" not in refused.stderr
    assert (run_dir / "recipe.toml").read_text() == before
    longer = run_in_process("run", "--resume", run_dir, "--set", "trainer.epochs=5", "--quiet")
    assert longer.returncode == 0, longer.stderr
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]
    assert "epochs = 5" in (run_dir / "recipe.toml").read_text()


def test_nonfinite_loss_stops_with_exit_1_and_keeps_last_good_checkpoint(recipe, tmp_path):
    run_dir = tmp_path / "run"
    result = run_in_process("run", recipe, "--run-dir", run_dir, "--set", "optimizer.name='sgd'",
                            "--set", "optimizer.lr=1e30", "--set", "trainer.checkpoint_every_steps=1")
    assert result.returncode == 1, result.stderr
    assert "not finite" in result.stderr or "loss became" in result.stderr
    assert "epoch 1" in result.stderr and "Traceback" not in result.stderr
    assert not (run_dir / "model.pt").exists()
    for path in checkpoint.step_files(run_dir / "checkpoints"):
        saved = checkpoint.load(path)
        assert all(torch.isfinite(t).all() for t in saved.model.values())


class Payload:
    """Unpickling this would run `open(marker, "w")`: the side effect the tests look for."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("writer", ["torch_save", "raw_pickle"])
def test_malicious_checkpoint_is_refused_and_runs_no_code(writer, reference, tmp_path):
    import shutil

    marker = tmp_path / "PWNED"
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    evil = run_dir / "checkpoints" / "step-99999999.pt"
    if writer == "torch_save":
        torch.save({"format": "pipeforge-checkpoint", "x": Payload(marker)}, evil)
    else:
        evil.write_bytes(pickle.dumps({"format": "pipeforge-checkpoint", "x": Payload(marker)}))
    with pytest.raises(CheckpointError, match="not a readable pipeforge checkpoint"):
        checkpoint.load(evil)
    assert not marker.exists()
    # Resume never skips a checkpoint it cannot read (training on would write over it): exit 2
    # naming the file, and nothing changed; moved away, the newest valid one is used.
    before = sorted(p.name for p in run_dir.rglob("*"))
    refused = run_in_process("run", "--resume", run_dir, "--quiet")
    assert refused.returncode == 2 and "step-99999999.pt" in refused.stderr and "Traceback" not in refused.stderr
    assert sorted(p.name for p in run_dir.rglob("*")) == before and not marker.exists()
    evil.rename(tmp_path / "evil.pt")
    resumed = run_in_process("run", "--resume", run_dir, "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert not marker.exists()


def test_truncated_and_foreign_checkpoints_are_refused(reference, tmp_path):
    good = reference / "checkpoints" / "step-00000128.pt"
    truncated = tmp_path / "step-00000200.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="not a readable pipeforge checkpoint"):
        checkpoint.load(truncated)
    foreign = tmp_path / "weights.pt"
    torch.save({"fc.weight": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not a pipeforge checkpoint"):
        checkpoint.load(foreign)
    # A damaged newest checkpoint: the previous valid one is used.
    (tmp_path / "good.pt").write_bytes(good.read_bytes())
    (tmp_path / "good.pt").rename(tmp_path / "step-00000128.pt")
    path, saved = checkpoint.latest_valid(tmp_path)
    assert path.name == "step-00000128.pt" and saved.global_step == 128


@pytest.mark.parametrize("every, expected", [(2, ["best.pt", "step-00000128.pt", "step-00000160.pt"]),
                                             (0, ["best.pt", "step-00000160.pt"])])
def test_checkpoint_every_epochs(every, expected, tmp_path):
    from conftest import RECIPES

    run_dir = tmp_path / "run"
    result = run_in_process("run", RECIPES / "quickstart.toml", "--run-dir", run_dir, "--quiet",
                            "--set", f"trainer.checkpoint_every_epochs={every}")
    assert result.returncode == 0, result.stderr
    # quickstart: 1024 samples / 32 = 32 steps an epoch, 5 epochs; the last epoch is always saved.
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == expected
    longer = run_in_process("run", "--resume", run_dir, "--quiet", "--set", "trainer.epochs=6",
                            "--set", f"trainer.checkpoint_every_epochs={every}")
    assert longer.returncode == 0, longer.stderr
    assert [json.loads(r)["epoch"] for r in (run_dir / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 5, 6]
