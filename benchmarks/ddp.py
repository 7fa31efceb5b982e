"""Data-parallel scaling on this machine, and what the per-step stop check costs under DDP.

    python benchmarks/ddp.py [--rounds 3] [--candidate NAME=SRC]...

Trains W2 (popularity MLP, TensorBoard off) and W3 (FashionMNIST MLP, in memory) with 1 and 2
processes under torch's launcher (gloo, one torch thread each), timed in-process by
benchmarks/pipeforge_driver.py on every rank (the slowest rank counts), interleaved round by
round, and reports the median training time, optimizer steps per second per process and
samples per second overall. `--candidate NAME=SRC` also runs every case with another source
tree of pipeforge first on PYTHONPATH — e.g. the tree before the stop check stopped blocking:
`git archive 092390a src/pipeforge | tar -x -C /tmp/before` then `--candidate before=/tmp/before/src`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.workloads import DRIVER, RECIPES, Sizes, prepare_data

SIZES = Sizes(20, 1000, 100, 10, 800, 200, 2, 12000, 2000, 1, 256, 64)


def cases(data) -> dict[str, list[str]]:
    return {
        "W2 popularity MLP (800 samples, b32, 10 epochs)": [str(RECIPES / "w2_popularity.toml"), "--set", "callbacks=[]"],
        "W3 FashionMNIST MLP (12k samples, b64, 2 epochs)": [str(RECIPES / "w3_fashion.toml"), "--set",
                                                             f"dataset.root={data.fashion}"],
    }


def train(args: list[str], nproc: int, src: str | None, run_dir: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", NO_COLOR="1", CUDA_VISIBLE_DEVICES="")
    if src:
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               str(DRIVER), *args, "--run-dir", str(run_dir)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    # The ranks print at once: their lines may interleave, so find each object.
    results = [json.loads(found) for found in re.findall(r"BENCH_RESULT (\{[^{}]*\})", done.stdout)]
    if done.returncode != 0 or len(results) != nproc:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    slowest = max(results, key=lambda r: r["train_s"])
    return {"train_s": slowest["train_s"], "steps": slowest["steps"], "samples": slowest["samples"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--candidate", action="append", default=[], metavar="NAME=SRC")
    args = parser.parse_args()
    sources = [("current", None)] + [tuple(c.split("=", 1)) for c in args.candidate]
    load = os.getloadavg()
    samples: dict[tuple, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = prepare_data(tmp / "data", SIZES, {"W3"})
        work = cases(data)
        for round_ in range(args.rounds):
            for name, recipe_args in work.items():
                for label, src in sources:
                    for nproc in (1, 2) if round_ % 2 == 0 else (2, 1):
                        run_dir = tmp / f"run-{time.time_ns()}"
                        samples.setdefault((name, label, nproc), []).append(train(recipe_args, nproc, src, run_dir))
    print(f"## Data-parallel scaling (`python benchmarks/ddp.py --rounds {args.rounds}"
          + "".join(f" --candidate {c}" for c in args.candidate) + "`)\n")
    print(f"gloo on {len(os.sched_getaffinity(0))} CPUs, one torch thread per process; median of {args.rounds} "
          f"interleaved rounds; load average 1/5/15 min before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}.\n")
    print("| workload | pipeforge | processes | train s | steps/s per process | samples/s overall | vs 1 process |")
    print("|---|---|---|---|---|---|---|")
    for name in work:
        for label, _ in sources:
            base = None
            for nproc in (1, 2):
                runs = samples[(name, label, nproc)]
                seconds = statistics.median(r["train_s"] for r in runs)
                steps, total = runs[0]["steps"], runs[0]["samples"]
                base = base or seconds
                print(f"| {name} | {label} | {nproc} | {seconds:.3f} | {steps / seconds:.0f} | {total / seconds:.0f} | "
                      f"{base / seconds:.2f}× |")


if __name__ == "__main__":
    main()
