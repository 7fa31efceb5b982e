"""Sweep targets (issue 15): a 20-trial grid sweep against 20 separate runs, and validating a
1,000-trial sweep.

    python benchmarks/sweep.py                    # prints the table (~3-5 min on 2 idle cores)
    python benchmarks/sweep.py --write-results    # ... and puts it in benchmarks/RESULTS.md under "## Sweeps"
    python benchmarks/sweep.py --rounds 2         # alternate which contender goes first

1. Wall time of `pipeforge sweep recipes/popularity_mlp.toml` over a 5 × 4 grid (optimizer.lr ×
   model.hidden, 20 trials) with `--parallel 2`, against the same 20 trials as 20 `pipeforge run`
   processes one after another, each from spawn to exit. Both use one torch thread per process.
   Each trial's metrics.jsonl is compared with its separate run's: the sweep must compute the
   same thing, only faster.
2. Validating a 1,000-trial grid (100 learning rates × 10 widths): expansion plus validation of
   every trial in-process (after imports and plugin discovery; the best wall time of 5, since
   other processes only ever add to it, and the median CPU time), the whole `pipeforge sweep
   --dry-run` command from spawn to exit (median of 3), and whether torch was imported.

The machine is often shared: the load average before and after is recorded. Run it inside the
project's virtual environment with the bundled plugins installed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "popularity_mlp.toml"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
LRS = [0.005, 0.01, 0.02, 0.05, 0.1]
HIDDEN = [8, 16, 32, 64]
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", NO_COLOR="1", CUDA_VISIBLE_DEVICES="")
PIPEFORGE = [sys.executable, "-m", "pipeforge"]

VALIDATE_CHILD = """
import json, sys, time
from pathlib import Path
started, cpu_started = time.perf_counter(), time.process_time()
from pipeforge.plugins import discover
from pipeforge.sweep import plan_sweep, read_sweep
plugins = discover()
ready, cpu_ready = time.perf_counter(), time.process_time()
data, _ = read_sweep(Path(sys.argv[1]), [], sys.argv[2:4], [], {"monitor": "test_accuracy"})
plan = plan_sweep(data, plugins.registry, sys.argv[1])
done, cpu_done = time.perf_counter(), time.process_time()
print(json.dumps({"trials": len(plan.trials), "imports": ready - started, "validate": done - ready,
                  "validate_cpu": cpu_done - cpu_ready,
                  "torch": "torch" in sys.modules}))
"""


def timed(command: list[str], **kwargs) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, stdin=subprocess.DEVNULL, **kwargs)
    took = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(map(str, command))} failed:\n{done.stderr[-3000:]}")
    return took, done


def grid_flags() -> list[str]:
    return ["--grid", "optimizer.lr=" + ",".join(map(str, LRS)), "--grid", "model.hidden=" + ",".join(map(str, HIDDEN))]


def run_sweep(work: Path) -> tuple[float, Path]:
    sweep_dir = work / "sweep"
    took, _ = timed([*PIPEFORGE, "sweep", str(RECIPE), *grid_flags(), "--parallel", "2", "--monitor", "test_accuracy",
                     "--sweep-dir", str(sweep_dir), "--quiet"], cwd=work)
    return took, sweep_dir


def run_separately(work: Path) -> tuple[float, list[Path]]:
    dirs, start = [], time.perf_counter()
    for number, (lr, hidden) in enumerate((lr, hidden) for lr in LRS for hidden in HIDDEN):
        run_dir = work / "runs" / f"trial-{number:04d}"
        timed([*PIPEFORGE, "run", str(RECIPE), "--set", f"optimizer.lr={lr}", "--set", f"model.hidden={hidden}",
               "--run-dir", str(run_dir), "--quiet"], cwd=work)
        dirs.append(run_dir)
    return time.perf_counter() - start, dirs


def same_metrics(sweep_dir: Path, run_dirs: list[Path]) -> bool:
    return all((sweep_dir / d.name / "metrics.jsonl").read_text() == (d / "metrics.jsonl").read_text() for d in run_dirs)


def validation(work: Path) -> dict[str, float | bool]:
    recipe = work / "popularity_sweep.toml"
    shutil.copy(RECIPE, recipe)
    lrs = "optimizer.lr=" + ",".join(str(round(0.001 * (i + 1), 3)) for i in range(100))
    widths = "model.hidden=" + ",".join(str(2 ** (i % 7) + i) for i in range(10))
    inside, whole = [], []
    for _ in range(5):
        _, done = timed([sys.executable, "-c", VALIDATE_CHILD, str(recipe), lrs, widths], cwd=work)
        inside.append(json.loads(done.stdout))
    for _ in range(3):
        took, done = timed([*PIPEFORGE, "sweep", str(recipe), "--grid", lrs, "--grid", widths, "--monitor",
                            "test_accuracy", "--dry-run"], cwd=work)
        assert "1,000 trials" in done.stdout, done.stdout
        whole.append(took)
    assert all(row["trials"] == 1000 for row in inside)
    return {"validate": min(r["validate"] for r in inside),
            "imports": statistics.median(r["imports"] for r in inside),
            "validate_cpu": statistics.median(r["validate_cpu"] for r in inside),
            "command": statistics.median(whole), "torch": any(r["torch"] for r in inside)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1, help="rounds of sweep vs separate runs (alternating order)")
    parser.add_argument("--write-results", action="store_true", help='put the table in benchmarks/RESULTS.md under "## Sweeps"')
    args = parser.parse_args()
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    started = time.perf_counter()
    sweeps, separate, equal = [], [], []
    with tempfile.TemporaryDirectory(prefix="pipeforge-sweep-bench-") as tmp:
        checked = validation(Path(tmp))
        for round_ in range(args.rounds):
            work = Path(tmp) / f"round{round_}"
            work.mkdir()
            order = ("sweep", "runs") if round_ % 2 == 0 else ("runs", "sweep")
            for which in order:
                if which == "sweep":
                    took, sweep_dir = run_sweep(work)
                    sweeps.append(took)
                else:
                    took, run_dirs = run_separately(work)
                    separate.append(took)
                print(f"round {round_ + 1}: {which} {took:.1f} s", file=sys.stderr)
            equal.append(same_metrics(sweep_dir, run_dirs))
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    sweep_s, runs_s = statistics.median(sweeps), statistics.median(separate)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    speedup = runs_s / sweep_s
    lines = [
        "## Sweeps",
        "",
        f"Command: `python benchmarks/sweep.py{' --rounds ' + str(args.rounds) if args.rounds != 1 else ''} --write-results` "
        f"(see its docstring); commit {commit}, {time.strftime('%Y-%m-%d %H:%M %z')}, {os.cpu_count()} CPUs, "
        f"load average 1/5/15 min {load_before} → {load_after}, {time.perf_counter() - started:.0f} s in all. "
        "One torch thread per process.",
        "",
        "| target | goal | measured | met |",
        "|---|---|---|---|",
        f"| 20-trial grid of recipes/popularity_mlp.toml: 20 `pipeforge run` one after another / `pipeforge sweep --parallel 2` (wall) "
        f"| ≥ 5× | {speedup:.2f}× ({runs_s:.1f} s / {sweep_s:.1f} s) | {'yes' if speedup >= 5 else '**no**'} |",
        f"| validating a 1,000-trial grid (expansion + validation of every trial, in-process) | < 2 s, no torch "
        f"| {checked['validate']:.2f} s wall, best of 5 ({checked['validate_cpu']:.2f} s CPU), torch "
        f"{'imported' if checked['torch'] else 'not imported'} "
        f"| {'yes' if checked['validate'] < 2 and not checked['torch'] else '**no**'} |",
        "",
        f"- Every trial's metrics.jsonl equals its separate run's: {'yes' if all(equal) else '**no**'}.",
        f"- The whole `pipeforge sweep … --dry-run` command for those 1,000 trials, spawn to exit: {checked['command']:.2f} s "
        f"(of which imports and plugin discovery {checked['imports']:.2f} s).",
        f"- Rounds: {args.rounds}; sweep wall times {', '.join(f'{s:.1f}' for s in sweeps)} s; "
        f"separate runs {', '.join(f'{s:.1f}' for s in separate)} s.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write_results:
        write_section(RESULTS, text)
        print(f"wrote {RESULTS}", file=sys.stderr)
    return 0


def write_section(path: Path, section: str) -> None:
    """Replace the "## Sweeps" section of RESULTS.md (or add it at the end); the rest stays."""
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    start = old.find("\n## Sweeps\n")
    if start < 0:
        path.write_text(old.rstrip("\n") + "\n\n" + section, encoding="utf-8")
        return
    end = old.find("\n## ", start + 1)
    after = "\n" + old[end + 1:] if end >= 0 else ""
    path.write_text(old[:start + 1] + section + after, encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
