"""Shared test fixtures: run the installed `pipeforge` command as a user does.

Torch is pinned to one thread (the machines are shared 2-core boxes), in this process and in
every subprocess the tests start.
"""

from __future__ import annotations

import os
import subprocess
import sys
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
