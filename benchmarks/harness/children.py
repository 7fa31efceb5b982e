"""Run one child process and measure it: wall time, peak RSS, exit status, its result line.

Each measurement is a fresh child: `os.wait4` reaps exactly that process and returns *its*
resource usage, so `ru_maxrss` is this child's peak (and that of any child it waited for),
never the maximum over every child this process has had (which `RUSAGE_CHILDREN` would give).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULT_PREFIX = "BENCH_RESULT "


@dataclass
class ChildRun:
    """What one child did: `wall_s` from spawn to exit, `maxrss_mb` its peak resident set."""

    command: list[str]
    returncode: int
    wall_s: float
    maxrss_mb: float
    stdout: str
    stderr: str
    result: dict[str, Any] = field(default_factory=dict)  # its BENCH_RESULT line, if any
    processes: int = 1  # the most processes its tree had at once (e.g. DataLoader workers + 1)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def failure(self) -> str:
        """A short account of a failed run: the command and the end of its stderr."""
        tail = "\n".join((self.stderr or self.stdout).strip().splitlines()[-15:])
        return f"exit {self.returncode}: {' '.join(self.command)}\n{tail}"


def run_child(command: list[str], *, env: dict[str, str], cwd: Path, timeout_s: float) -> ChildRun:
    """Start `command`, wait for it with `os.wait4`, and return its measurements.

    Output goes to temporary files rather than pipes, so the child never blocks on a full pipe
    and nothing but `wait4` reaps it. A child still running after `timeout_s` is killed
    (returncode -9).
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=cwd)
        killer = threading.Timer(timeout_s, proc.kill)
        killer.start()
        counter = ProcessCounter(proc.pid)
        counter.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
            counter.stop()
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; Popen must not wait again
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    run = ChildRun(command, proc.returncode, wall, usage.ru_maxrss / 1024, stdout, stderr,  # KiB on Linux
                   processes=counter.most)
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            run.result = json.loads(line[len(RESULT_PREFIX):])
            break
    return run


class ProcessCounter(threading.Thread):
    """Counts the processes in a child's tree every 0.2 s (reading /proc: ~20 µs a look).

    `ru_maxrss` is the peak of the largest single process of the tree, not of their sum: where
    a run forks DataLoader workers, this count says so next to the figure.
    """

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.most = 1
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.2):
            self.most = max(self.most, 1 + len(descendants(self.pid)))

    def stop(self) -> None:
        self._done.set()


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc/<pid>/task/*/children (Linux); [] elsewhere."""
    found: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/children") as f:
                    children = [int(c) for c in f.read().split()]
            except OSError:
                continue
            found += children
            todo += children
    return found


def child_env(threads: int, cuda: bool = False) -> dict[str, str]:
    """The environment of every child: the same fixed thread count, no colour, CPU only.

    GPUs are hidden so that both contenders train on the CPU whatever the machine has (the
    reference picks CUDA when it sees one, pipeforge's `device = "auto"` likewise); with
    `cuda`, they are left visible and both train on the GPU.
    """
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), NO_COLOR="1", COLUMNS="120")
    if not cuda:
        env["CUDA_VISIBLE_DEVICES"] = ""
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    return env
