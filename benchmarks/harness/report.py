"""Turn the measurements into medians, ratios to the reference, targets and markdown tables.

A *sample* is one child's measurements in one round: `{"key", "mode", "round", "wall_s",
"maxrss_mb", "train_s", "steps", "samples", "accuracy"}`, where `mode` is `reference` (a
reference script: every field), `driver` (pipeforge's engine timed from inside: `train_s`)
or `cli` (`pipeforge run`: `wall_s`, `maxrss_mb`, `accuracy` from metrics.jsonl).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Callable

from harness.workloads import WORKLOADS, Contender


@dataclass
class Summary:
    """One contender's medians over the rounds (None where it was not measured)."""

    contender: Contender
    train_s: list[float]
    steps: int | None
    samples: int | None
    accuracy: float | None
    wall_s: list[float]
    maxrss_mb: list[float]
    processes: int = 1

    @property
    def train_median(self) -> float | None:
        return statistics.median(self.train_s) if self.train_s else None

    @property
    def throughput(self) -> float | None:
        median = self.train_median
        return self.samples / median if median and self.samples else None

    @property
    def wall_median(self) -> float | None:
        return statistics.median(self.wall_s) if self.wall_s else None

    @property
    def rss_median(self) -> float | None:
        return statistics.median(self.maxrss_mb) if self.maxrss_mb else None


def summarise(contenders: list[Contender], samples: list[dict[str, Any]]) -> dict[str, Summary]:
    """Medians per contender: training time from reference/driver samples, wall time and
    peak RSS from reference/cli samples (the process a user actually runs)."""
    out: dict[str, Summary] = {}
    for c in contenders:
        mine = [s for s in samples if s["key"] == c.key]
        timed = [s for s in mine if s["mode"] in ("reference", "driver")]
        whole = [s for s in mine if s["mode"] in ("reference", "cli")]
        accuracies = [s["accuracy"] for s in timed if s.get("accuracy") is not None]
        out[c.key] = Summary(
            contender=c,
            train_s=[s["train_s"] for s in timed if s.get("train_s") is not None],
            steps=timed[-1].get("steps") if timed else None,
            samples=timed[-1].get("samples") if timed else None,
            accuracy=statistics.median(accuracies) if accuracies else None,
            wall_s=[s["wall_s"] for s in whole],
            maxrss_mb=[s["maxrss_mb"] for s in whole],
            processes=max([s.get("processes", 1) for s in mine], default=1),
        )
    return out


@dataclass
class Target:
    """A goal from the Performance issue: `measured` compared with `goal` by `met`."""

    name: str
    measured: float | None
    goal: float
    at_most: bool  # True: measured ≤ goal; False: measured ≥ goal

    @property
    def met(self) -> bool | None:
        if self.measured is None:
            return None
        return self.measured <= self.goal if self.at_most else self.measured >= self.goal


def targets(summaries: dict[str, Summary], candidate: str | None = None) -> list[Target]:
    """The issue's targets, each a ratio of medians measured in this run; with `candidate`,
    for that candidate's pipeforge contenders (against the same references)."""
    at = f"@{candidate}" if candidate else ""
    suffix = f" [{candidate}]" if candidate else ""

    def ratio(key: str, base: str, of: Callable[[Summary], float | None]) -> float | None:
        a, b = summaries.get(key + at), summaries.get(base)
        if a is None or b is None:
            return None
        x, y = of(a), of(b)
        return x / y if x and y else None

    time_of = lambda s: s.train_median  # noqa: E731
    speed_of = lambda s: s.throughput  # noqa: E731
    out = [
        # The trainer issue's targets for the default cadence (checkpoint_every_s).
        Target("W1 training time, pipeforge / reference", ratio("W1/pipeforge", "W1/reference", time_of), 0.75, True),
        Target("W2 training time, pipeforge / reference", ratio("W2/pipeforge", "W2/reference", time_of), 0.5, True),
        Target("W3 throughput, pipeforge / reference", ratio("W3/pipeforge", "W3/reference", speed_of), 0.98, False),
        Target("W4 throughput fp32, pipeforge / reference", ratio("W4/pipeforge", "W4/reference", speed_of), 0.98, False),
        Target("W4 throughput, pipeforge bf16+channels_last / reference fp32",
               ratio("W4/pipeforge-bf16-cl", "W4/reference", speed_of), 1.35, False),
        Target("W2 whole-process wall time, `pipeforge run` / reference",
               ratio("W2/pipeforge", "W2/reference", lambda s: s.wall_median), 1.3, True),
    ]
    for workload in WORKLOADS:
        for s in summaries.values():
            c = s.contender
            if c.workload == workload and c.baseline and s.maxrss_mb and c.pythonpath is None:
                out.append(Target(f"{workload} peak RSS, `pipeforge run` ({c.label}) / reference",
                                  ratio(c.key, c.baseline, lambda s: s.rss_median), 1.1, True))
    for t in out:
        t.name += suffix
    return [t for t in out if t.measured is not None]


# ------------------------------------------------------------------------------ markdown


def _f(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:.0f}"


def _spread(values: list[float]) -> str:
    if not values:
        return "–"
    median = statistics.median(values)
    if len(values) == 1:
        return f"{median:.3f}"
    return f"{median:.3f} ({min(values):.3f}–{max(values):.3f})"


def training_table(summaries: dict[str, Summary]) -> str:
    rows = ["| workload | contender | train s, median (min–max) | steps | samples/s | time ratio | throughput ratio | µs/step | final accuracy |",
            "|---|---|---|---|---|---|---|---|---|"]
    for s in summaries.values():
        c = s.contender
        base = summaries.get(c.baseline) if c.baseline else None
        time_ratio = s.train_median / base.train_median if base and base.train_median and s.train_median else None
        speed_ratio = s.throughput / base.throughput if base and base.throughput and s.throughput else None
        per_step = s.train_median / s.steps * 1e6 if s.train_median and s.steps else None
        vs = f" (vs {base.contender.label})" if base and c.workload == "W4" else ""
        rows.append(
            f"| {c.workload} | {c.label} | {_spread(s.train_s)} | {s.steps or '–'} | {_f(s.throughput)} | "
            f"{_f(time_ratio)}{vs} | {_f(speed_ratio)} | {_f(per_step)} | {_f(s.accuracy)} |"
        )
    return "\n".join(rows)


def process_table(summaries: dict[str, Summary]) -> str:
    rows = ["| workload | contender | command | wall s, median (min–max) | wall ratio | peak RSS MiB | RSS ratio | processes |",
            "|---|---|---|---|---|---|---|---|"]
    for s in summaries.values():
        c = s.contender
        if not s.wall_s:
            continue
        base = summaries.get(c.baseline) if c.baseline else None
        wall_ratio = s.wall_median / base.wall_median if base and base.wall_median else None
        rss_ratio = s.rss_median / base.rss_median if base and base.rss_median else None
        command = f"python reference/{c.script.name}" if c.is_reference else "pipeforge run --quiet"
        rows.append(
            f"| {c.workload} | {c.label} | `{command}` | {_spread(s.wall_s)} | {_f(wall_ratio)} | "
            f"{_f(s.rss_median, 4)} | {_f(rss_ratio)} | {s.processes} |"
        )
    return "\n".join(rows)


def targets_table(found: list[Target]) -> str:
    rows = ["| target | goal | measured | met |", "|---|---|---|---|"]
    for t in found:
        goal = f"{'≤' if t.at_most else '≥'} {t.goal}"
        met = {True: "yes", False: "**no**", None: "–"}[t.met]
        rows.append(f"| {t.name} | {goal} | {_f(t.measured)} | {met} |")
    return "\n".join(rows)


def overhead_tables(result: dict[str, Any]) -> str:
    steps = result["step_us"]
    floor = next(iter(steps.values()))
    rows = [f"Per training step on W1's model ({result['steps_per_epoch']} steps per epoch, one process, "
            "variants interleaved; median):", "",
            "| loop | µs/step | vs the hand loop |", "|---|---|---|"]
    rows += [f"| {name} | {value:.1f} | {value - floor:+.1f} |" for name, value in steps.items()]
    phases = result.get("epoch_ms") or {}
    if phases:
        names = [k for k in next(iter(phases.values())) if k != "steps per epoch"]
        rows += ["", "Where an epoch's time goes in `pipeforge.engine.fit` (ms per epoch, median; the recipes "
                 "as benchmarked, with the quiet console reporter):", "",
                 "| workload | steps per epoch | " + " | ".join(names) + " |",
                 "|---|---|" + "---|" * len(names)]
        for workload, values in phases.items():
            rows.append(f"| {workload} | {values['steps per epoch']:.0f} | "
                        + " | ".join(f"{values[n]:.2f}" for n in names) + " |")
    calls = result["call_ns"]
    rows += ["", "One `on_batch_end` hook call (median of tight loops):", "",
             "| call | ns/call |", "|---|---|"]
    rows += [f"| {name} | {value:.0f} |" for name, value in calls.items()]
    return "\n".join(rows)


def results_markdown(facts: dict[str, str], summaries: dict[str, Summary], found: list[Target],
                     overhead: dict[str, Any] | None) -> str:
    """RESULTS.md: machine facts, then the tables."""
    lines = ["# pipeforge benchmark results", "",
             "Generated by `benchmarks/run.py --write-results`; see benchmarks/README.md for what is measured.", "",
             "| fact | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in facts.items()]
    lines += ["", "## Targets (ratios of medians, same run)", "", targets_table(found),
              "", "## Training time (in-process)", "",
              "Reference: time around its training loop. pipeforge: `fit()` from `on_fit_start` to "
              "`on_fit_end` in `benchmarks/pipeforge_driver.py` (the code path of `pipeforge run`). "
              "Both include the per-epoch evaluation; pipeforge also its per-epoch checkpoints and "
              "model.pt. Time ratio < 1 and throughput ratio > 1 mean pipeforge is faster; W4 "
              "variants are compared with the reference of the same precision.", "",
              training_table(summaries),
              "", "## Whole process (start to exit, imports included) and peak RSS", "",
              "Peak RSS is `ru_maxrss` from `os.wait4` on each fresh child: the largest single "
              "process of its tree. `processes` is the most processes the tree had at once; above "
              "1, pipeforge forked DataLoader workers (`trainer.num_workers = \"auto\"`), whose "
              "memory (mostly shared with the parent) is not added to the figure.", "",
              process_table(summaries)]
    if overhead:
        lines += ["", "## Framework overhead per step", "", overhead_tables(overhead)]
    return "\n".join(lines) + "\n"


def workload_titles() -> str:
    return "\n".join(f"- {k}: {v}" for k, v in WORKLOADS.items())
