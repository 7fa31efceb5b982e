"""Data-parallel training on CPU (gloo) with 2 processes, launched through torch's launcher."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import RECIPES, cli_env, run_in_process, run_pipeforge
from plugin_dists import make_dist, pip_install

pytestmark = pytest.mark.slow  # subprocess-heavy: `-m "not slow"` leaves it out

RECIPE = RECIPES / "popularity_mlp.toml"

# A test-only entry-point plugin, steered by environment variables: dump each rank's final
# weights, SIGKILL a rank, or raise on a rank, at a chosen step.
PROBE_PLUGIN = '''
import os, signal
from pipeforge import hookimpl

RANK = os.environ.get("RANK", "0")


@hookimpl
def register_components():
    return []


@hookimpl
def on_batch_end(state):
    if os.environ.get("STEP_SLEEP"):  # every rank: slow the run so a time limit lands mid-run
        import time
        time.sleep(float(os.environ["STEP_SLEEP"]))
    if os.environ.get("PROBE_RANK", RANK) != RANK:
        return
    first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
    if str(state.global_step) == os.environ.get("KILL_AT_STEP") and first_attempt:
        os.kill(os.getpid(), signal.SIGKILL)
    if str(state.global_step) == os.environ.get("RAISE_AT_STEP"):
        raise RuntimeError(f"probe failure on rank {RANK}")


@hookimpl
def on_fit_end(state):
    if os.environ.get("DUMP_DIR"):
        import torch
        torch.save(state.model.state_dict(), os.path.join(os.environ["DUMP_DIR"], f"rank{RANK}.pt"))
'''


@pytest.fixture(scope="module")
def probe_site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("probe")
    return pip_install(make_dist(root, "pipeforge-probe", "probe", "pipeforge_probe", PROBE_PLUGIN), root / "site")


def env(site: Path, **extra: str) -> dict[str, str]:
    return cli_env(PYTHONPATH=str(site), **extra)


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_train_one_run(probe_site, tmp_path):
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    run_dir = tmp_path / "run"
    result = run_pipeforge("run", RECIPE, "--nproc-per-node", 2, "--run-dir", run_dir,
                           env=env(probe_site, DUMP_DIR=str(dumps)), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    # Rank 0 alone wrote the run dir and the console; metrics once per epoch.
    assert [r["epoch"] for r in rows(run_dir)] == list(range(1, 11))
    assert result.stdout.count("run dir:") == 1
    assert rows(run_dir)[-1]["train_loss"] < rows(run_dir)[0]["train_loss"]
    assert json.loads((run_dir / "env.json").read_text())["world_size"] == 2
    # DDP kept every rank's parameters identical.
    rank0 = torch.load(dumps / "rank0.pt", weights_only=True)
    rank1 = torch.load(dumps / "rank1.pt", weights_only=True)
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    saved = torch.load(run_dir / "model.pt", weights_only=True)
    assert all(torch.equal(rank0[k], saved[k]) for k in rank0)


def test_torchrun_directly_makes_one_default_run_dir(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         "-m", "pipeforge", "run", str(RECIPE), "--quiet", "--set", "trainer.epochs=2"],
        capture_output=True, text=True, cwd=tmp_path, env=cli_env(), timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = list((tmp_path / "runs").iterdir())
    assert len(rows(run_dir)) == 2


def test_killed_two_process_run_resumes(probe_site, tmp_path):
    run_dir = tmp_path / "run"
    # 800 samples / 2 ranks / batch 32 = 13 steps an epoch; die in epoch 4.
    killed = run_pipeforge("run", RECIPE, "--nproc-per-node", 2, "--run-dir", run_dir,
                           env=env(probe_site, KILL_AT_STEP="45", PROBE_RANK="1"), timeout=300)
    assert killed.returncode != 0
    assert not (run_dir / "model.pt").exists()
    assert (run_dir / "checkpoints").is_dir()
    resumed = run_pipeforge("run", "--resume", run_dir, "--nproc-per-node", 2, env=env(probe_site), timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [r["epoch"] for r in rows(run_dir)] == list(range(1, 11))
    assert (run_dir / "model.pt").exists()


def test_a_restarted_job_continues_from_its_checkpoint_by_itself(probe_site, tmp_path):
    """torchrun --max-restarts: a rank SIGKILLed mid-run makes the launcher start the job again,
    which continues the same run dir from its newest checkpoint, no --resume needed, and ends
    with the weights of an uninterrupted run."""
    reference = tmp_path / "reference"
    whole = run_pipeforge("run", RECIPE, "--nproc-per-node", 2, "--run-dir", reference, "--quiet",
                          "--set", "trainer.epochs=4", env=env(probe_site), timeout=300)
    assert whole.returncode == 0, whole.stderr[-3000:]
    run_dir = tmp_path / "run"
    # 13 steps an epoch: checkpoints at 10 and 20, rank 1 dies at step 25 of the first attempt.
    restarted = run_pipeforge("run", RECIPE, "--nproc-per-node", 2, "--max-restarts", 1, "--run-dir", run_dir,
                              "--set", "trainer.epochs=4", "--set", "trainer.checkpoint_every_steps=10",
                              env=env(probe_site, KILL_AT_STEP="25", PROBE_RANK="1"), timeout=300)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert "resuming" in restarted.stderr and "step-00000020.pt" in restarted.stderr
    assert [r["epoch"] for r in rows(run_dir)] == [1, 2, 3, 4]
    assert rows(run_dir) == rows(reference)
    mine, theirs = (torch.load(d / "model.pt", weights_only=True) for d in (run_dir, reference))
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)


def test_two_nodes_form_one_job_and_its_run_resumes_on_one(tmp_path):
    """Multi-node as on a cluster, on one machine: two torchrun agents (one process each) meet
    at a c10d rendezvous on 127.0.0.1 and train one run; it then resumes on a single process."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
               "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=pipeforge-test",
               "-m", "pipeforge", "run", str(RECIPE), "--run-dir", str(run_dir), "--set", "trainer.epochs=2"]
    agents = [subprocess.Popen(command, env=cli_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True) for _ in range(2)]
    outputs = [agent.communicate(timeout=300) for agent in agents]
    for agent, (_, stderr) in zip(agents, outputs):
        assert agent.returncode == 0, stderr[-3000:]
    assert sum(stdout.count("run dir:") for stdout, _ in outputs) == 1  # rank 0 alone speaks
    assert [r["epoch"] for r in rows(run_dir)] == [1, 2]
    assert json.loads((run_dir / "env.json").read_text())["world_size"] == 2
    longer = run_in_process("run", "--resume", run_dir, "--quiet", "--set", "trainer.epochs=3")  # one process: this one
    assert longer.returncode == 0, longer.stderr[-3000:]
    assert [r["epoch"] for r in rows(run_dir)] == [1, 2, 3]


def test_max_time_stops_every_rank_at_one_step_with_a_checkpoint(probe_site, tmp_path):
    """Rank 0's clock decides; the ranks learn it through the background exchange of stop
    questions and all stop at the same step: a checkpoint, exit 3, and the run resumes."""
    run_dir = tmp_path / "run"
    # 20 ms a step, 13 steps an epoch: 30 epochs would take 8 s; the limit is 2 s.
    stopped = run_pipeforge("run", RECIPE, "--nproc-per-node", 2, "--run-dir", run_dir, "--set", "trainer.epochs=30",
                            "--set", "trainer.max_time=2", env=env(probe_site, STEP_SLEEP="0.02"), timeout=300)
    assert stopped.returncode == 3, stopped.stderr[-3000:]
    assert "trainer.max_time (2 s) reached" in stopped.stderr and "pipeforge run --resume" in stopped.stderr
    assert list((run_dir / "checkpoints").glob("step-*.pt"))
    assert not (run_dir / "model.pt").exists()
    resumed = run_pipeforge("run", "--resume", run_dir, "--nproc-per-node", 2, "--set", 'trainer.max_time="1h"',
                            env=env(probe_site), timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [r["epoch"] for r in rows(run_dir)] == list(range(1, 31))


def test_a_failing_rank_ends_the_job_quickly(probe_site, tmp_path):
    started = time.monotonic()
    result = run_pipeforge("run", RECIPE, "--nproc-per-node", 2, "--run-dir", tmp_path / "run",
                           env=env(probe_site, RAISE_AT_STEP="5", PROBE_RANK="1"), timeout=300)
    took = time.monotonic() - started
    assert result.returncode != 0
    assert "[rank 1] RuntimeError: probe failure on rank 1" in result.stderr
    assert took < 120, f"the job took {took:.0f} s to end"


def test_strategy_none_refuses_a_multi_process_launch(tmp_path):
    result = run_in_process("run", RECIPE, "--nproc-per-node", 2, "--run-dir", tmp_path / "run",
                            "--set", 'trainer.strategy="none"')  # refused before anything is launched
    assert result.returncode != 0
    assert 'trainer.strategy is "none"' in result.stderr
    assert result.stderr.count('trainer.strategy is "none"') == 1  # said once, by rank 0


def test_a_data_parallel_checkpoint_resumes_on_one_process(probe_site, tmp_path):
    run_dir = tmp_path / "run"
    killed = run_pipeforge("run", RECIPE, "--nproc-per-node", 2, "--run-dir", run_dir,
                           "--set", "trainer.checkpoint_every_steps=4",
                           env=env(probe_site, KILL_AT_STEP="30", PROBE_RANK="0"), timeout=300)
    assert killed.returncode != 0
    resumed = run_in_process("run", "--resume", run_dir)  # one process: this one
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    history = rows(run_dir)
    assert [r["epoch"] for r in history] == list(range(1, 11))
    assert history[-1]["train_loss"] < history[0]["train_loss"]
