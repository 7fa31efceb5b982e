"""Shared test fixtures: run the installed `pipeforge` command as a user does.

Torch is pinned to one thread (the machines are shared 2-core boxes), in this process and in
every subprocess the tests start.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
BIN = Path(sys.executable).parent


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a `pipeforge` subprocess: one torch thread, no colour codes."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", NO_COLOR="1", COLUMNS="200")
    env.update(extra)
    return env


def run_pipeforge(*args: object, cwd: Path | None = None, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the installed console script and capture its output (never raises on exit code)."""
    exe = BIN / "pipeforge"
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "pipeforge"]
    return subprocess.run(
        [*command, *map(str, args)], capture_output=True, text=True, cwd=cwd,
        env=env or cli_env(), timeout=timeout, stdin=subprocess.DEVNULL,
    )


def run_in_process(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`pipeforge ARGS` run by `pipeforge.cli.main` in this process: the parser, commands,
    messages and exit codes of the console script, without a new interpreter that imports torch
    (and torch._dynamo, at the first optimizer step) again, the most of a short run's time.

    For set-up runs and for the steps where the process boundary is not what a test checks;
    a test of the command as a user calls it, of its signals or of its imports runs it with
    `run_pipeforge`. The pipeforge logger, torch's thread count and the working directory are
    restored after the command."""
    import contextlib
    import io
    import logging

    from pipeforge.cli import main

    logger = logging.getLogger("pipeforge")
    saved_logger = (list(logger.handlers), logger.level, logger.propagate)
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch else None
    before = os.getcwd()
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = main([str(arg) for arg in args])
            except SystemExit as exc:  # argparse's --help and usage errors
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    finally:
        os.chdir(before)
        logger.handlers, logger.propagate = saved_logger[0], saved_logger[2]
        logger.setLevel(saved_logger[1])
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(threads or 1)
    return subprocess.CompletedProcess(["pipeforge", *map(str, args)], code, stdout.getvalue(), stderr.getvalue())


@pytest.fixture
def pipeforge(tmp_path: Path):
    """`pipeforge(*args)` runs the CLI in a temporary working directory."""

    def run(*args: object, **kwargs):
        kwargs.setdefault("cwd", tmp_path)
        return run_pipeforge(*args, **kwargs)

    return run


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    yield


# A test-only plugin that SIGKILLs its own process at the moment named in its environment
# variables. It is an entry-point plugin, not part of the recipe, so resuming runs the same recipe.
KILLER_PLUGIN = '''
import os, signal
from pathlib import Path
from pipeforge import hookimpl


@hookimpl
def register_components():
    return []


@hookimpl
def on_batch_end(state, batch_index):
    if str(state.global_step) == os.environ.get("KILL_AT_STEP"):
        os.kill(os.getpid(), signal.SIGKILL)
    if f"{state.epoch}:{batch_index}" == os.environ.get("KILL_AT_BATCH"):  # "EPOCH:BATCH_INDEX"
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("STEP_SLEEP"):  # slow the run so a test's signal lands mid-run
        import time
        (state.run_dir / "started").touch()
        time.sleep(float(os.environ["STEP_SLEEP"]))


@hookimpl
def on_epoch_end(epoch):
    if str(epoch) == os.environ.get("KILL_AFTER_EPOCH"):
        os.kill(os.getpid(), signal.SIGKILL)
'''


@pytest.fixture(scope="session")
def killer_env(tmp_path_factory):
    """The CLI environment with the killer plugin installed (see KILLER_PLUGIN)."""
    from plugin_dists import make_dist, pip_install

    root = tmp_path_factory.mktemp("killer")
    site = pip_install(make_dist(root, "pipeforge-killer", "killer", "pipeforge_killer", KILLER_PLUGIN), root / "site")
    return cli_env(PYTHONPATH=str(site))


def start_slow_run(recipe: Path, run_dir: Path, env: dict, step_sleep: float, until: Path,
                   *args: str, new_session: bool = False) -> subprocess.Popen:
    """Start `pipeforge run` slowed to `step_sleep` s a step (killer plugin); return once `until`
    exists. `run_dir / "started"` appears with the first finished step."""
    proc = subprocess.Popen([sys.executable, "-m", "pipeforge", "run", recipe, "--run-dir", run_dir, *args],
                            env={**env, "STEP_SLEEP": str(step_sleep)}, start_new_session=new_session,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not until.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    assert until.exists(), f"{until} never appeared"
    return proc


def group_gone(pgid: int, within_s: float) -> bool:
    """Whether every process of the group `pgid` has exited within `within_s` seconds."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


# The hardening suite's figures (kills landed, where, resumes identical): lines a test adds here
# are printed at the end of the session, so the full suite's command shows them without -rA.
HARDENING_REPORT: list[str] = []


def pytest_terminal_summary(terminalreporter) -> None:
    if HARDENING_REPORT:
        terminalreporter.section("hardening figures")
        for line in HARDENING_REPORT:
            terminalreporter.write_line(line)
