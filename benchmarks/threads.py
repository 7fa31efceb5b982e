"""What `trainer.threads = "auto"` should pick: training time by thread count, at rest and with
the CPUs kept busy by other processes.

    python benchmarks/threads.py [--rounds 3] [--load-warmup 65] [--write benchmarks/RESULTS-threads.md]

For W2 (popularity MLP), W3 (FashionMNIST MLP, in memory) and a small W4 (ResNet-18 on 512
CIFAR images, one DataLoader worker), trains with `trainer.threads` = 1, every CPU, and "auto"
(OMP_NUM_THREADS unset, so "auto" decides), interleaved round by round, and reports the median
training time (timed in-process by benchmarks/pipeforge_driver.py). "Under load" starts one
busy-looping process per CPU and waits until the 1-minute load average shows it (what "auto"
reads) before measuring. Ratios within one condition are what count; the machine's other load
is printed with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.workloads import DRIVER, RECIPES, Sizes, prepare_data

SIZES = Sizes(20, 1000, 100, 10, 800, 200, 1, 12000, 2000, 1, 512, 128)


def workloads(data) -> dict[str, list[str]]:
    """Recipe and --set overrides per workload."""
    return {
        "W2 popularity MLP": [str(RECIPES / "w2_popularity.toml"), "--set", "callbacks=[]"],
        "W3 FashionMNIST MLP": [str(RECIPES / "w3_fashion.toml"), "--set", f"dataset.root={data.fashion}",
                                "--set", f"trainer.epochs={SIZES.w3_epochs}"],
        "W4 ResNet-18, 512 images": [str(RECIPES / "w4_resnet18.toml"), "--set", f"dataset.root={data.cifar}",
                                     "--set", "trainer.epochs=1"],
    }


def train_time(args: list[str], threads: str, run_dir: Path) -> tuple[float, int]:
    """(training seconds, torch threads used) of one driver child with `trainer.threads`."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update(NO_COLOR="1", CUDA_VISIBLE_DEVICES="")
    command = [sys.executable, str(DRIVER), *args, "--run-dir", str(run_dir), "--set", f"trainer.threads={threads}"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1].removeprefix("BENCH_RESULT "))
    return result["train_s"], result["threads"]


def measure(cases: dict[str, list[str]], choices: list[str], rounds: int, tmp: Path) -> dict:
    times: dict[tuple[str, str], list[float]] = {}
    used: dict[tuple[str, str], int] = {}
    for round_ in range(rounds):
        for name, args in cases.items():
            order = choices[round_ % len(choices):] + choices[:round_ % len(choices)]
            for threads in order:
                seconds, n = train_time(args, threads, tmp / f"run-{len(times)}-{round_}-{threads}-{time.time_ns()}")
                times.setdefault((name, threads), []).append(seconds)
                used[(name, threads)] = n
    return {key: (statistics.median(values), used[key]) for key, values in times.items()}


class Load:
    """One busy-looping process per CPU, until `stop`."""

    def __init__(self, cpus: int) -> None:
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cpus)]

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()


def table(title: str, results: dict, cases: list[str], choices: list[str]) -> list[str]:
    lines = [f"### {title}", "", "| workload | " + " | ".join(f"threads = {c}" for c in choices) + " | auto chose |",
             "|---|" + "---|" * (len(choices) + 1)]
    for name in cases:
        base = results[(name, "1")][0]
        cells = [f"{results[(name, c)][0]:.2f} s ({results[(name, c)][0] / base:.2f}×)" for c in choices]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {results[(name, 'auto')][1]} |")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--load-warmup", type=float, default=65, help="seconds of load before measuring under it")
    parser.add_argument("--write", type=Path, help="also write the tables to this markdown file")
    parser.add_argument("--only", help="comma-separated workload prefixes, e.g. W2,W3")
    args = parser.parse_args()
    cpus = len(os.sched_getaffinity(0))
    choices = ["1", str(cpus), "auto"]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = prepare_data(tmp / "data", SIZES, {"W3", "W4"})
        cases = {k: v for k, v in workloads(data).items()
                 if not args.only or any(k.startswith(p) for p in args.only.split(","))}
        out = [f"## Threads: training time by `trainer.threads` ({cpus} CPUs)", "",
               f"`python benchmarks/threads.py --rounds {args.rounds}` — median of {args.rounds} interleaved "
               "rounds; in brackets, the ratio to 1 thread (lower is faster).", ""]
        load_before = os.getloadavg()[0]
        rest = measure(cases, choices, args.rounds, tmp)
        out += table(f"At rest (1-minute load average {load_before:.2f} before)", rest, list(cases), choices)
        load = Load(cpus)
        try:
            time.sleep(args.load_warmup)
            busy = os.getloadavg()[0]
            loaded = measure(cases, choices, args.rounds, tmp)
        finally:
            load.stop()
        out += table(f"Under load: {cpus} busy processes (1-minute load average {busy:.2f} when measuring began)",
                     loaded, list(cases), choices)
    text = "\n".join(out)
    print(text)
    if args.write:
        args.write.write_text(text + "\n")


if __name__ == "__main__":
    main()
