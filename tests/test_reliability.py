"""What pipeforge promises when things go wrong: nothing is lost, and every stop can be resumed.

Each test here is a defect an attack on pipeforge found (see docs/reliability.md), kept fixed.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from conftest import RECIPES, group_gone, run_in_process, start_slow_run
from datagen import write_image_folder
from pipeforge import checkpoint, rundir
from pipeforge.errors import UsageError
from pipeforge.rundir import RunDir

QUICKSTART = RECIPES / "quickstart.toml"


# ------------------------------------------------------------------------------ signals


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("catfish") / "catfish").root


def catfish_args(root: Path) -> list[str]:
    # A DataLoader with a worker process: the path the cat/fish and CIFAR recipes take.
    return ["--set", f"dataset.root={root}", "--set", "trainer.epochs=3", "--set", "trainer.batch_size=4",
            "--set", "trainer.num_workers=1", "--quiet"]


@pytest.mark.slow
def test_sigterm_to_the_process_group_with_workers_checkpoints_and_resumes(image_folder, killer_env, tmp_path):
    """systemd, Slurm's scancel and `kill -- -PGID` signal every process of the group, the
    DataLoader workers included: the run still checkpoints, exits 143, and resumes exactly."""
    recipe = RECIPES / "catfish_simplenet.toml"
    reference = tmp_path / "reference"  # the uninterrupted run, trained in this process
    done = run_in_process("run", recipe, "--run-dir", reference, *catfish_args(image_folder), cwd=tmp_path)
    assert done.returncode == 0, done.stderr

    run_dir = tmp_path / "run"
    proc = start_slow_run(recipe, run_dir, killer_env, 0.05, run_dir / "metrics.jsonl",
                          *catfish_args(image_folder), new_session=True)
    os.killpg(proc.pid, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert "Resume with: pipeforge run --resume" in stderr and "Traceback" not in stderr
    assert "DataLoader worker" not in stderr
    assert group_gone(proc.pid, within_s=30), "a DataLoader worker outlived the run"
    found = checkpoint.latest_valid(run_dir / "checkpoints")
    assert found is not None and found[1].epochs_done >= 1
    assert not (run_dir / "model.pt").exists()

    resumed = run_in_process("run", "--resume", run_dir, "--quiet", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    mine = torch.load(run_dir / "model.pt", weights_only=True)
    theirs = torch.load(reference / "model.pt", weights_only=True)
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    assert (run_dir / "metrics.jsonl").read_text() == (reference / "metrics.jsonl").read_text()


# ------------------------------------------------------------------------------ run dirs


@pytest.mark.parametrize("when", ["before the first one locks", "after the first one locks"])
def test_two_claims_of_one_run_dir_one_wins_and_the_loser_changes_nothing(when, tmp_path, monkeypatch):
    """Two `pipeforge run --run-dir SAME` at once: exactly one gets the dir, and the refused
    one removes nothing (it used to delete the winner's files)."""
    path = tmp_path / "rd"
    raced, winners, refused, checks = [], [], [], []
    real_check = rundir._refuse_if_taken

    def other_process_claims() -> None:
        try:
            winner = RunDir.claim(path, "x")
        except UsageError as exc:
            refused.append(str(exc))
            return
        (winner.path / "recipe.toml").write_text("the winner's recipe")
        winners.append(winner)

    def check(target: Path, ignore: str | None = None) -> None:
        real_check(target, ignore)
        checks.append(target)  # claim() checks twice: before it locks, and under the lock
        if not raced and len(checks) == (1 if when == "before the first one locks" else 2):
            raced.append(True)
            other_process_claims()

    monkeypatch.setattr(rundir, "_refuse_if_taken", check)
    if when == "before the first one locks":
        with pytest.raises(UsageError, match="in use by another pipeforge process"):
            RunDir.claim(path, "x")
        assert (path / "recipe.toml").read_text() == "the winner's recipe"
        winners[0].release()
    else:
        first = RunDir.claim(path, "x")
        assert refused and not winners
        assert first.discard_if_untrained() is True and not path.exists()


def test_a_refused_run_leaves_a_run_dir_in_use_untouched(tmp_path, pipeforge):
    path = tmp_path / "rd"
    with RunDir.claim(path, "x") as held:
        (held.path / "recipe.toml").write_text("mine")
        before = sorted(p.name for p in path.iterdir())
        refused = pipeforge("run", QUICKSTART, "--run-dir", path)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        assert sorted(p.name for p in path.iterdir()) == before
        assert (path / "recipe.toml").read_text() == "mine"


@pytest.mark.slow  # trains
def test_a_failure_in_the_first_epoch_keeps_the_logs(tmp_path):
    """The loss becomes inf in epoch 1, before any checkpoint: the TensorBoard log of the steps
    that ran is kept, and the message does not promise a checkpoint that does not exist."""
    run_dir = tmp_path / "rd"
    result = run_in_process("run", QUICKSTART, "--run-dir", run_dir, "--set", "optimizer.lr=1e30", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "No checkpoint had been written yet" in result.stderr
    assert "was removed" not in result.stderr and f"run dir {run_dir} is kept" in result.stderr
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert (run_dir / "recipe.toml").is_file() and (run_dir / "env.json").is_file()


@pytest.mark.slow  # trains
def test_a_run_that_failed_before_logging_is_removed_but_a_users_folder_stays(tmp_path):
    bad = ["--set", "model.in_features=5"]  # the first step fails with a shape error
    new = tmp_path / "new"
    assert run_in_process("run", QUICKSTART, "--run-dir", new, *bad, cwd=tmp_path).returncode == 1
    assert not new.exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    assert run_in_process("run", QUICKSTART, "--run-dir", mine, *bad, cwd=tmp_path).returncode == 1
    assert mine.is_dir() and not any(mine.iterdir())


def test_anything_else_in_a_failed_run_dir_keeps_it(tmp_path):
    with RunDir.claim(tmp_path / "rd", "x") as run_dir:
        (run_dir.path / "recipe.toml").write_text("r")
        (run_dir.path / "callback-output").mkdir()
        (run_dir.path / "callback-output" / "log.txt").write_text("a callback's log")
        assert run_dir.discard_if_untrained() is False
    assert (tmp_path / "rd" / "callback-output" / "log.txt").read_text() == "a callback's log"


def test_only_the_holder_of_a_run_dir_discards_anything(tmp_path):
    path = tmp_path / "rd"
    path.mkdir()
    (path / "recipe.toml").write_text("r")
    assert RunDir(path).discard_if_untrained() is False
    assert (path / "recipe.toml").exists()


# ------------------------------------------------------------------------------ checkpoints


def test_a_checkpoint_is_refused_when_the_weights_broke_though_the_loss_did_not(tmp_path):
    """An update can make the weights inf while the loss it came from was finite: the state
    being saved is what is checked, and nothing is written over the last good checkpoint."""
    from torch.utils.data import TensorDataset

    from pipeforge.checkpoint import EpochProgress
    from pipeforge.context import Datasets, RunState
    from pipeforge.distributed import Dist
    from pipeforge.errors import TrainingError
    from pipeforge.plugins import discover
    from pipeforge.recipe import load_recipe
    from pipeforge.saver import Saver

    recipe = load_recipe(QUICKSTART, discover().registry)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    data = Datasets({"train": TensorDataset(torch.randn(4, 4), torch.zeros(4, dtype=torch.long))})
    state = RunState(recipe, tmp_path, "cpu", model, optimizer, None, data, epoch=1, global_step=3)
    saver = Saver(tmp_path, state, recipe.trainer, [], Dist())
    progress = EpochProgress(order_state=torch.Generator().get_state(), batches_done=3,
                             loss_sum=torch.tensor(1.5), samples=12)
    saver.save(progress)
    saver.finish()
    with torch.no_grad():
        model.weight[0, 0] = float("inf")
    state.global_step = 4
    with pytest.raises(TrainingError, match="weights or the training loss are not finite.*step-00000003.pt"):
        saver.save(progress)
    saver.close()
    assert [p.name for p in checkpoint.step_files(tmp_path / "checkpoints")] == ["step-00000003.pt"]


@pytest.mark.parametrize("case", ["parent is a file", "name too long"])
def test_a_run_dir_that_cannot_be_made_is_a_usage_error(case, tmp_path, pipeforge):
    if case == "parent is a file":
        (tmp_path / "file").write_text("mine")
        target = tmp_path / "file" / "rd"
    else:
        target = tmp_path / ("x" * 300)
    result = pipeforge("run", QUICKSTART, "--run-dir", target)
    assert result.returncode == 2 and "cannot create the run dir" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr) < 4096
    if case == "parent is a file":
        assert (tmp_path / "file").read_text() == "mine"
