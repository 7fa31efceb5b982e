"""Smoke test of the benchmark suite: `python benchmarks/run.py --quick` runs every workload,
reference and pipeforge alike, and prints its tables.

The numbers of a --quick run mean nothing and no timing is ever asserted here (speed goals live
in benchmarks/ and are compared as ratios in one run); this only keeps the suite runnable as
the engine, recipes and plugins change.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, cli_env

pytestmark = pytest.mark.slow  # subprocess-heavy: `-m "not slow"` leaves it out

WORKLOADS = ("W1", "W2", "W3", "W4")
# --quick, smaller still: every contender, table and the overhead child run as in any --quick
# run, on the least data that trains each workload (one W4 batch instead of two bf16 ResNet-18
# batches of 128, which were most of this test's time; the sizes are only ever reported), two
# children at a time (each is mostly an interpreter importing torch; CI has two cores).
SMOKE = ("--size", "w3_train=128", "--size", "w3_test=64", "--size", "w4_train=32", "--size", "w4_test=16",
         "--jobs", "2")


def test_quick_run_trains_every_contender_and_prints_the_tables(tmp_path):
    results = tmp_path / "RESULTS.md"
    work = tmp_path / "work"
    work.mkdir()
    result = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick", *SMOKE, "--tmp", str(work), "--write-results", str(results)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=cli_env(), stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    out = result.stdout
    for heading in ("## Targets", "## Training time (in-process)", "## Whole process", "## Framework overhead per step"):
        assert heading in out, heading
    rows = [line for line in out.splitlines() if re.match(r"\| W\d \| ", line)]
    training = [row for row in rows if row.count("|") == 10]  # the training-time table's rows
    for workload in WORKLOADS:
        mine = [row for row in training if row.startswith(f"| {workload} |")]
        assert any("| reference" in row for row in mine), workload
        assert any("| pipeforge" in row for row in mine), workload
    for row in training:
        accuracy = row.rstrip(" |").rsplit("|", 1)[-1].strip()
        assert re.fullmatch(r"[0-9.]+", accuracy), f"no final accuracy in: {row}"  # every contender trained
    assert "| hook.on_batch_end, 0 implementations |" in out
    # The same tables, with the machine's facts, in the results file; the work dir is cleaned up.
    written = results.read_text()
    assert "| CPU |" in written and "| load average" in written and "## Targets" in written
    assert list(work.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: --cuda would run")
def test_cuda_without_a_gpu_is_refused_before_anything_runs(tmp_path):
    result = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--cuda", "--quick", "--tmp", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=cli_env(), stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    assert "torch sees no CUDA device" in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # no data generated, no run dir made
