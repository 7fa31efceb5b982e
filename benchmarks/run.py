"""pipeforge against hand-written training loops: one command, every workload, one table.

    python benchmarks/run.py [--quick] [--rounds 5] [--only W1,W2] [--threads 1] [--write-results]

Runs every contender of the chosen workloads as fresh child processes, round-robin (each round
runs each contender once, in a rotated order), and reports medians and ratios to the
hand-written reference: training time measured in-process, whole-process wall time, peak RSS
and final accuracy; then the per-step framework overhead (benchmarks/overhead.py). Prints
markdown tables; `--write-results` also writes them, with the machine's facts, to
benchmarks/RESULTS.md. `--quick` is a smoke test of the suite (tiny sizes, one round): its
numbers mean nothing. Exits 1 if any child failed, 0 otherwise (missed targets included:
a benchmark reports, it does not assert). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields, replace
from importlib import metadata
from pathlib import Path
from typing import Any

from harness import report
from harness.children import ChildRun, child_env, run_child
from harness.workloads import BENCH, DRIVER, FULL, QUICK, ROOT, WORKLOADS, Contender, Sizes, contenders, prepare_data, with_candidates

PIPEFORGE = Path(sys.executable).parent / "pipeforge"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and one round: a smoke test of the suite")
    parser.add_argument("--rounds", type=int, help="rounds of every contender (default 5; 1 with --quick)")
    parser.add_argument("--only", help="comma-separated workloads to run, e.g. W1,W2 (default all)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in every child (default 1)")
    parser.add_argument("--write-results", nargs="?", const=BENCH / "RESULTS.md", type=Path, metavar="PATH",
                        help="also write the tables to PATH (default benchmarks/RESULTS.md)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every raw sample to PATH")
    parser.add_argument("--train-only", action="store_true",
                        help="skip the `pipeforge run` children (whole-process wall time and RSS)")
    parser.add_argument("--no-overhead", action="store_true", help="skip the per-step overhead measurement")
    parser.add_argument("--tmp", type=Path, help="where data and run dirs go (default: the system temp dir)")
    parser.add_argument("--candidate", action="append", default=[], metavar="NAME=SRC",
                        help="also run every pipeforge contender with SRC (a changed copy of "
                        "pipeforge's src/) first on PYTHONPATH, labelled NAME; repeatable")
    parser.add_argument("--candidate-set", action="append", default=[], metavar="NAME=KEY=VALUE",
                        help="an extra --set for candidate NAME's pipeforge runs; repeatable")
    parser.add_argument("--size", action="append", default=[], metavar="FIELD=N",
                        help="change one workload size, e.g. --size w4_train=8192 (fields: "
                        + ", ".join(f.name for f in fields(Sizes)) + ")")
    parser.add_argument("--timeout", type=float, default=600, help="seconds before a child is killed")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="run N children of a round at once (default 1). Children running together "
                        "slow each other down: only for a smoke test of the suite, e.g. with --quick")
    parser.add_argument("--cuda", action="store_true",
                        help="let the children see the GPU: references and pipeforge train on CUDA "
                        "(pipeforge keeps W1-W3's in-memory data on the device); default: CPU only")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 5)
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: expected 1 or more")
    wanted = [w.strip().upper() for w in args.only.split(",")] if args.only else list(WORKLOADS)
    unknown = [w for w in wanted if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}")
    args.workloads = wanted
    args.candidates = {}
    for text in args.candidate:
        name, sep, src = text.partition("=")
        if not sep or not (Path(src) / "pipeforge" / "__init__.py").is_file():
            parser.error(f"--candidate {text}: expected NAME=SRC where SRC/pipeforge/__init__.py exists")
        args.candidates[name] = Path(src).resolve()
    args.candidate_sets = {}
    for text in args.candidate_set:
        name, sep, override = text.partition("=")
        if not sep or name not in args.candidates or "=" not in override:
            parser.error(f"--candidate-set {text}: expected NAME=KEY=VALUE for a NAME given to --candidate")
        args.candidate_sets.setdefault(name, []).append(override)
    args.sizes = QUICK if args.quick else FULL
    for text in args.size:
        name, sep, value = text.partition("=")
        if not sep or name not in {f.name for f in fields(Sizes)} or not value.isdigit() or int(value) < 1:
            parser.error(f"--size {text}: expected FIELD=N with a positive N, FIELD one of "
                         + ", ".join(f.name for f in fields(Sizes)))
        args.sizes = replace(args.sizes, **{name: int(value)})
    return args


def command_for(contender: Contender, mode: str, run_dir: Path) -> list[str]:
    """The child's command line; `{run}` in a contender's args becomes its run dir."""
    args = [a.replace("{run}", str(run_dir)) for a in contender.args]
    if mode == "reference":
        return [sys.executable, str(contender.script), *args]
    if mode == "driver":
        return [sys.executable, str(DRIVER), str(contender.recipe), "--run-dir", str(run_dir), *args]
    pipeforge = [str(PIPEFORGE)] if PIPEFORGE.exists() else [sys.executable, "-m", "pipeforge"]
    return [*pipeforge, "run", str(contender.recipe), "--quiet", "--run-dir", str(run_dir), *args]


def measure(contender: Contender, mode: str, workdir: Path, env: dict[str, str], timeout: float) -> tuple[dict[str, Any], ChildRun]:
    """Run one child in a fresh directory and return its sample (and the run, for errors)."""
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=workdir))
    target = run_dir / "out"  # pipeforge claims a new dir; the reference writes logs there
    if mode == "reference":
        target.mkdir()
    try:
        if contender.pythonpath:
            env = dict(env, PYTHONPATH=os.pathsep.join(filter(None, [contender.pythonpath, env.get("PYTHONPATH")])))
        child = run_child(command_for(contender, mode, target), env=env, cwd=run_dir, timeout_s=timeout)
        sample: dict[str, Any] = {"key": contender.key, "mode": mode, "wall_s": child.wall_s,
                                  "maxrss_mb": child.maxrss_mb, "processes": child.processes, **child.result}
        if mode == "cli" and child.ok:
            sample["accuracy"] = last_accuracy(target / "metrics.jsonl")
        return sample, child
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def last_accuracy(metrics: Path) -> float | None:
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return next((v for k, v in rows[-1].items() if k.endswith("_accuracy")), None) if rows else None


def run_rounds(jobs: list[tuple[Contender, str]], rounds: int, workdir: Path, env: dict[str, str],
               timeout: float, at_once: int = 1) -> tuple[list[dict[str, Any]], list[str]]:
    """Every job once per round; each round starts one job further along, so no contender
    always runs first (or right after the same neighbour). `at_once` > 1 (`--jobs`) runs that
    many children of a round together, for smoke tests: their numbers then mean nothing."""
    samples: list[dict[str, Any]] = []
    failures: list[str] = []
    pool = ThreadPoolExecutor(max_workers=at_once) if at_once > 1 else None
    for r in range(rounds):
        shift = r % len(jobs)
        order = jobs[shift:] + jobs[:shift]
        run = lambda job: measure(job[0], job[1], workdir, env, timeout)  # noqa: E731
        measured = pool.map(run, order) if pool else map(run, order)  # in order, as each is done
        for (contender, mode), (sample, child) in zip(order, measured):
            sample["round"] = r + 1
            what = f"[round {r + 1}/{rounds}] {contender.key} ({mode})"
            if not child.ok or "train_s" not in sample and mode != "cli":
                failures.append(f"{what}: {child.failure()}")
                log(f"{what}: FAILED, {child.failure()}")
                continue
            samples.append(sample)
            train = f"train {sample['train_s']:.3f} s, " if "train_s" in sample else ""
            procs = f", {child.processes} processes" if child.processes > 1 else ""
            log(f"{what}: {train}wall {child.wall_s:.2f} s, peak RSS {child.maxrss_mb:.0f} MiB{procs}")
    if pool:
        pool.shutdown()
    return samples, failures


def run_overhead(workdir: Path, env: dict[str, str], quick: bool, timeout: float) -> tuple[dict[str, Any] | None, str | None]:
    args = ["--steps", "50", "--repeats", "1", "--calls", "2000"] if quick else []
    child = run_child([sys.executable, str(BENCH / "overhead.py"), *args], env=env, cwd=workdir, timeout_s=timeout)
    if not child.ok or not child.result:
        return None, f"overhead: {child.failure()}"
    log(f"overhead: done in {child.wall_s:.1f} s")
    return child.result, None


def machine_facts(args: argparse.Namespace, argv: list[str], load_before: tuple[float, ...]) -> dict[str, str]:
    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src", "plugins"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        commit = f"{commit} (src/ or plugins/ modified)" if dirty else commit
    except (OSError, subprocess.SubprocessError):
        commit = "?"
    load_after = os.getloadavg()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": "python " + " ".join(shlex.quote(a) for a in ["benchmarks/run.py", *argv]),
        "git commit": commit or "?",
        "CPU": f"{cpu}; {os.cpu_count()} logical CPUs; avx512_bf16: {'yes' if 'avx512_bf16' in flags else 'no'}",
        "python / torch / torchvision / pipeforge": " / ".join(
            [platform.python_version(), version("torch"), version("torchvision"), version("pipeforge")]),
        "torch threads per child": f"{args.threads} (OMP_NUM_THREADS, MKL_NUM_THREADS)",
        "rounds": f"{args.rounds}{' (--quick: sizes and numbers are meaningless)' if args.quick else ''}",
        "sizes": ", ".join(f"{f.name}={getattr(args.sizes, f.name)}" for f in fields(Sizes)),
        "load average 1/5/15 min, before → after": (
            f"{' '.join(f'{x:.2f}' for x in load_before)} → {' '.join(f'{x:.2f}' for x in load_after)}"),
    }


def cuda_device(env: dict[str, str]) -> str:
    """The name of the GPU the children will train on, or "" when torch sees none."""
    probe = "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=300)
    return found.stdout.strip() if found.returncode == 0 else ""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    load_before = os.getloadavg()
    started = time.perf_counter()
    sizes = args.sizes
    env = child_env(args.threads, args.cuda)
    accelerator = "none: CPU only (CUDA hidden)"
    if args.cuda:
        accelerator = cuda_device(env)
        if not accelerator:
            log("benchmarks/run.py: --cuda, but torch sees no CUDA device here; run without --cuda")
            return 2
    workdir = Path(tempfile.mkdtemp(prefix="pipeforge-bench-", dir=args.tmp))
    try:
        data = prepare_data(workdir / "data", sizes, set(args.workloads))
        chosen = [c for c in contenders(sizes, data, args.quick) if c.workload in args.workloads]
        chosen = with_candidates(chosen, args.candidates, args.candidate_sets)
        jobs = [(c, mode) for c in chosen
                for mode in (["reference"] if c.is_reference else
                             ["driver"] + (["cli"] if c.whole_process and not args.train_only else []))]
        log(f"{len(jobs)} children per round, {args.rounds} round(s), {args.threads} thread(s); load {load_before[0]:.2f}")
        samples, failures = run_rounds(jobs, args.rounds, workdir, env, args.timeout, args.jobs)
        overhead = None
        if not args.no_overhead:
            # On the CPU even with --cuda: its hand loop and pipeforge must share a device.
            overhead, failure = run_overhead(workdir, child_env(args.threads), args.quick, args.timeout)
            failures += [failure] if failure else []
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    summaries = report.summarise(chosen, samples)
    found = report.targets(summaries)
    for name in args.candidates:
        found += report.targets(summaries, name)
    facts = machine_facts(args, argv, load_before)
    facts["accelerator"] = accelerator
    facts["suite wall time"] = f"{time.perf_counter() - started:.0f} s"
    text = report.results_markdown(facts, summaries, found, overhead)
    print(text)
    if args.write_results:
        args.write_results.write_text(text, encoding="utf-8")
        log(f"wrote {args.write_results}")
    if args.json:
        args.json.write_text(json.dumps({"facts": facts, "samples": samples, "overhead": overhead}, indent=1))
    if failures:
        log(f"{len(failures)} child run(s) failed:\n" + "\n\n".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
