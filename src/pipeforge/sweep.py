"""Sweeps, before anything trains: the sweep recipe, its trials, and the sweep dir's records.

`read_sweep` reads a recipe with a `[sweep]` table (see `sweep_table`) and the command line's
`--grid` / `--space` additions; `plan_sweep` expands it into trials — every grid point, or seeded
random draws, each trial's values depending only on the sweep's seed and its number — and
validates every trial's recipe, reporting all problems at once, each naming its trial and its
values. For an Optuna search, whose trials are drawn later, the edges of every distribution
(low, high, each choice) are validated instead. None of this imports torch: a 1,000-trial grid
is proven valid in about a second.

A sweep dir holds `sweep.toml` (the sweep recipe, resolved against the command line),
`sweep.jsonl` (one row per trial event: trial, number, values, status, objective) and one
ordinary run dir per trial (`trial-0000/`, …). The run dirs are the truth about a trial (a
`model.pt` means it finished); `sweep.jsonl` is its log, which also remembers failures.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import math
import os
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import tomli_w

from pipeforge.api import differences
from pipeforge.compose import compose
from pipeforge.errors import Problem, RecipeError, UsageError, shorten
from pipeforge.recipe import Recipe, check_metric_key, validate_recipe, validate_table
from pipeforge.recipe_file import parse_override, set_key
from pipeforge.registry import Registry
from pipeforge.rundir import lock_dir
from pipeforge.sweep_table import SweepSection

SWEEP_RECIPE = "sweep.toml"
SWEEP_LOG = "sweep.jsonl"
# A trial ends in one of these; the others (started, interrupted, crashed) are resumed.
DONE = ("finished", "pruned", "failed")
PRUNED_REASON = "pruned by Optuna"
# Sweep settings that may change when a sweep is started again: how, not what, it runs.
RESUMABLE_SWEEP_CHANGES = ("sweep.parallel",)


@dataclass(frozen=True)
class Trial:
    """One run of a sweep: its number and the recipe values it sets (dotted key → value)."""

    number: int
    values: dict[str, Any]

    @property
    def id(self) -> str:
        """Its name and run dir's name: `trial-0007`."""
        return trial_id(self.number)

    def overrides(self) -> list[str]:
        """The values as `--set` strings (`optimizer.lr=0.1`)."""
        return [f"{key}={toml_value(value)}" for key, value in self.values.items()]

    def label(self) -> str:
        return ", ".join(shorten(item, 60) for item in self.overrides())


def trial_id(number: int) -> str:
    return f"trial-{number:04d}"


@dataclass
class SweepPlan:
    """A validated sweep: the sweep recipe as written to `sweep.toml`, its `[sweep]` table, the
    objective, and the trials (all of them for grid and random; none yet for Optuna)."""

    data: dict[str, Any]
    section: SweepSection
    monitor: str
    mode: str
    trials: list[Trial]
    name: str
    source: str

    @property
    def base(self) -> dict[str, Any]:
        """The recipe without its `[sweep]` table: what every trial changes."""
        return {key: value for key, value in self.data.items() if key != "sweep"}

    @property
    def study(self) -> str:
        return self.section.study or self.name


# ------------------------------------------------------------------------------ reading


def read_sweep(path: Path, overrides: list[str], grid: list[str], space: list[str],
               settings: dict[str, Any]) -> tuple[dict[str, Any], Callable[[RecipeError], RecipeError]]:
    """The sweep recipe: `path` (with its includes) and `--set` overrides, plus `--grid KEY=V1,V2`
    and `--space KEY=DIST(ARGS)` flags and other `[sweep]` settings given on the command line
    (`settings`, None values left out), which replace the table's; and a function that adds to
    a `RecipeError` of it where each problem's key was written. `RecipeError` naming the flag
    for a malformed one."""
    composed = compose(path)
    try:
        composed.apply_overrides(list(overrides))
    except RecipeError as exc:
        raise RecipeError(exc.problems, str(path)) from None
    data = composed.data
    table = data.get("sweep")
    if table is None:
        table = data["sweep"] = {}
    if not isinstance(table, dict):
        return data, composed.locate  # validation says what is wrong with it
    problems: list[Problem] = []
    for kind, flags, parse in (("grid", grid, grid_flag), ("space", space, space_flag)):
        for text in flags:
            try:
                key, value = parse(text)
            except RecipeError as exc:
                problems += exc.problems
                continue
            target = table.setdefault(kind, {})
            if isinstance(target, dict):
                target[key] = value
    if problems:
        raise RecipeError(problems, "the command line")
    table.update({key: value for key, value in settings.items() if value is not None})
    return data, composed.locate


def grid_flag(text: str) -> tuple[str, list[Any]]:
    """`--grid optimizer.lr=0.01,0.1` → ("optimizer.lr", [0.01, 0.1]); each value is read as
    TOML (else kept as a string), commas inside brackets or quotes do not split."""
    key, _, raw = text.partition("=")
    if not _ARG_KEY.match(key.strip()) or not raw.strip():
        raise RecipeError([Problem(f"--grid {shorten(text)}", "expected KEY=V1,V2,… with a dotted KEY, "
                                   "e.g. optimizer.lr=0.01,0.1")])
    return key.strip(), [_value(part, f"--grid {text}") for part in _split_args(raw)]


def space_flag(text: str) -> tuple[str, dict[str, list[Any]]]:
    """`--space optimizer.lr=log_uniform(1e-4,0.1)` → ("optimizer.lr", {"log_uniform": [1e-4, 0.1]});
    also uniform(low,high), int(low,high) and choice(a,b,…)."""
    key, _, raw = text.partition("=")
    found = re.fullmatch(r"\s*(uniform|log_uniform|int|choice)\s*\((.*)\)\s*", raw, re.DOTALL)
    if not _ARG_KEY.match(key.strip()) or found is None:
        raise RecipeError([Problem(f"--space {shorten(text)}", "expected KEY=DIST(ARGS) with DIST one of "
                                   "uniform(low,high), log_uniform(low,high), int(low,high), choice(a,b,…)")])
    return key.strip(), {found.group(1): [_value(part, f"--space {text}") for part in _split_args(found.group(2))]}


_ARG_KEY = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


def _split_args(raw: str) -> list[str]:
    parts, depth, quote, current = [], 0, "", ""
    for char in raw:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += char
    return [part.strip() for part in [*parts, current] if part.strip()]


def _value(text: str, where: str) -> Any:
    try:
        return parse_override(f"v={text}")[1]
    except RecipeError as exc:
        raise RecipeError([Problem(shorten(where), exc.problems[0].message)]) from None


# ------------------------------------------------------------------------------ planning


def plan_sweep(data: dict[str, Any], registry: Registry, source: str) -> SweepPlan:
    """Validate a sweep recipe and every trial it makes; `RecipeError` listing every problem
    (the `[sweep]` table's, then each trial's, named by trial id and values)."""
    table = data.get("sweep")
    if not table:
        raise RecipeError([Problem("sweep", "nothing to sweep: add a [sweep] table with [sweep.grid] or "
                                   "[sweep.space], or give --grid / --space")], source)
    try:
        section = validate_table(SweepSection, table, "sweep")
    except RecipeError as exc:
        raise RecipeError(exc.problems, source) from None
    base = {key: value for key, value in data.items() if key != "sweep"}
    run = data.get("run")
    name = run.get("name") if isinstance(run, dict) else None
    # Optuna numbers its trials itself: a grid's points are checked all the same, a search's edges.
    trials = expand(section) if not section.uses_optuna else []
    kind = "trial" if trials else "point" if section.chosen_sampler == "grid" else "edge"
    checked = trials or (expand(section) if kind == "point" else edge_trials(section))
    monitor = section.monitor
    problems, first = check_trials(base, checked, registry, monitor, kind)
    if monitor is None and first is not None:
        monitor = first.trainer.best_metric
        if monitor is None:
            problems.insert(0, Problem("sweep.monitor", "required: the metrics.jsonl key that ranks the trials, "
                                       'e.g. "val_accuracy" (or set trainer.best_metric)'))
    if problems:
        raise RecipeError(problems, source)
    assert monitor is not None and isinstance(name, str)
    mode = section.mode or ("min" if monitor.endswith("loss") else "max")
    return SweepPlan(data, section, monitor, mode, trials, name, source)


def expand(section: SweepSection) -> list[Trial]:
    """Every trial of a grid (the product of its keys' values, the last key varying fastest) or a
    random search (`trials` draws; trial i's values depend only on the seed and i)."""
    if section.chosen_sampler == "grid":
        keys = list(section.grid)
        combos = itertools.product(*(section.grid[key] for key in keys))
        return [Trial(number, dict(zip(keys, combo))) for number, combo in enumerate(combos)]
    return [random_trial(section, number) for number in range(section.trials or 0)]


def random_trial(section: SweepSection, number: int) -> Trial:
    rng = random.Random(f"pipeforge-sweep:{section.seed}:{number}")
    return Trial(number, {key: section.space[key].sample(rng) for key in section.space})


def edge_trials(section: SweepSection) -> list[Trial]:
    """For a search Optuna draws later: one probe per edge of each distribution (low, high,
    each choice), the other keys at their first edge. Numbered -1: not trials that run."""
    firsts = {key: dist.extremes()[0] for key, dist in section.space.items()}
    probes = [Trial(-1, {**firsts, key: edge}) for key, dist in section.space.items() for edge in dist.extremes()]
    return list({json.dumps(p.values, sort_keys=True, default=str): p for p in probes}.values())


def check_trials(base: dict[str, Any], trials: list[Trial], registry: Registry, monitor: str | None,
                 kind: str = "trial") -> tuple[list[Problem], Recipe | None]:
    """Validate each trial's recipe (and that it writes `monitor`); the problems, each named by
    its trial (`kind` "trial"), grid point ("point") or edge of the search space ("edge") and
    its values (a problem every trial has is listed once), and the first valid trial's recipe."""
    found: dict[tuple[str, str, str | None], list[Trial]] = {}
    unwritten: dict[tuple[str, str, str | None], list[Trial]] = {}  # the monitor, per valid trial
    valid: list[Trial] = []
    first: Recipe | None = None
    for trial in trials:
        data = plain_copy(base)
        try:
            for key, value in trial.values.items():  # as its --set would, without TOML text
                set_key(data, key.split("."), plain_copy(value), key)
            recipe = validate_recipe(data, registry)
        except RecipeError as exc:
            for problem in exc.problems:
                found.setdefault((problem.path, problem.message, problem.hint), []).append(trial)
            continue
        valid.append(trial)
        first = first or recipe
        if monitor is not None:
            for problem in check_metric_key(recipe, monitor, "sweep.monitor"):
                unwritten.setdefault((problem.path, problem.message, problem.hint), []).append(trial)
    problems = []
    for (path, message, hint), failing in unwritten.items():
        if len(failing) == len(valid):  # no trial writes it: one problem of the sweep's
            problems.append(Problem(path, message, hint))
        else:
            found.setdefault((path, message, hint), []).extend(failing)
    for (path, message, hint), failing in found.items():
        if len(failing) == len(trials) and len(trials) > 1:  # the recipe's own problem
            problems.append(Problem(path, f"{message} (in every trial)", hint))
            continue
        for trial in failing:
            who = {"trial": trial.id, "point": "grid point", "edge": "sweep.space edge"}[kind]
            who = f"{who} ({trial.label()})"
            problems.append(Problem(f"{who}: {path}", message, hint))
    return problems, first


def plain_copy(value: Any) -> Any:
    """A copy of parsed TOML (dicts, lists, scalars), several times faster than deepcopy."""
    if isinstance(value, dict):
        return {key: plain_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain_copy(item) for item in value]
    return value


def toml_value(value: Any) -> str:
    """A value as TOML writes it inline (`--set` reads it back unchanged)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return tomli_w.dumps({"v": value})[len("v = "):].strip()


# ------------------------------------------------------------------------------ the sweep dir


@dataclass
class TrialRecord:
    """What is known about one trial: its latest event in sweep.jsonl and its state on disk."""

    trial: Trial
    status: str
    objective: float | None = None
    error: str | None = None
    epochs: int = 0


class SweepDir:
    """A sweep's directory, held by one `pipeforge sweep` process at a time (a lock file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock: Any = None

    @classmethod
    def open(cls, path: Path, data: dict[str, Any], header: str) -> SweepDir:
        """Create the sweep dir with `sweep.toml`, or take an existing one holding the same sweep
        (only `RESUMABLE_SWEEP_CHANGES` may differ; `sweep.toml` then keeps the new values) and
        lock it. `UsageError`, changing nothing, for another sweep or one a process is running."""
        sweep = cls(path)
        recipe = path / SWEEP_RECIPE
        if path.exists() and not recipe.is_file() and (not path.is_dir() or any(path.iterdir())):
            raise UsageError(f"{path} exists and is not a sweep dir (no {SWEEP_RECIPE}); choose another --sweep-dir")
        if recipe.is_file():
            from pipeforge.recipe_file import read_toml

            changes = [c for c in differences(read_toml(recipe), data) if c[0] not in RESUMABLE_SWEEP_CHANGES]
            if changes:
                lines = "\n".join(f"  {key}: {old!r} -> {new!r}" for key, old, new in changes[:20])
                raise UsageError(f"{path} holds a different sweep:\n{lines}\nchoose another --sweep-dir to start "
                                 "this one, or run the same sweep to continue it")
        try:
            path.mkdir(parents=True, exist_ok=True)
            sweep._acquire()
        except OSError as exc:
            raise UsageError(f"cannot create the sweep dir {path}: {exc.strerror or exc}") from None
        body = "".join(f"# {line}\n" for line in header.splitlines()) + "\n" + tomli_w.dumps(data)
        tmp = path / f".{SWEEP_RECIPE}.tmp"
        tmp.write_text(body, encoding="utf-8")
        os.replace(tmp, recipe)
        return sweep

    def _acquire(self) -> None:
        self._lock = lock_dir(self.path, "the sweep dir {path} is in use by another pipeforge sweep (pid {pid}); "
                                         "processes sharing an Optuna study each need their own --sweep-dir")

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def trial_dir(self, trial: Trial) -> Path:
        return self.path / trial.id

    def append(self, trial: Trial, status: str, **fields: Any) -> None:
        """Add one event to sweep.jsonl (one write of one line, under an exclusive lock)."""
        row = {"trial": trial.id, "number": trial.number, "values": trial.values, "status": status,
               **{key: value for key, value in fields.items() if value is not None},
               "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        line = json.dumps(row, default=str) + "\n"
        with open(self.path / SWEEP_LOG, "a", encoding="utf-8") as log:
            fcntl.flock(log, fcntl.LOCK_EX)
            log.write(line)

    def events(self) -> list[dict[str, Any]]:
        """Every row of sweep.jsonl (a torn last line, from a killed process, is skipped)."""
        return [row for row in jsonl_rows(self.path / SWEEP_LOG) if isinstance(row.get("number"), int)]

    def known_trials(self) -> list[Trial]:
        """The trials sweep.jsonl names, by number (for Optuna sweeps, whose trials are drawn)."""
        seen: dict[int, Trial] = {}
        for row in self.events():
            seen.setdefault(row["number"], Trial(row["number"], dict(row.get("values") or {})))
        return [seen[number] for number in sorted(seen)]

    def records(self, trials: Iterable[Trial], monitor: str, mode: str) -> list[TrialRecord]:
        """Each trial's status — finished or pruned (its run dir has `model.pt`), failed (as
        sweep.jsonl says), interrupted (its run dir has been started: resumable), or new —
        and its objective so far."""
        last: dict[int, dict[str, Any]] = {}
        for row in self.events():
            last[row["number"]] = row
        records = []
        for trial in trials:
            run_dir = self.trial_dir(trial)
            event = last.get(trial.number, {})
            rows = epoch_rows(run_dir)
            if (run_dir / "model.pt").is_file():
                status = "pruned" if _stop_reason(run_dir).startswith(PRUNED_REASON) else "finished"
            elif event.get("status") == "failed":
                status = "failed"
            elif (run_dir / "recipe.toml").is_file():
                status = "interrupted"
            else:
                status = "new"
            records.append(TrialRecord(trial, status, objective(rows, monitor, mode), event.get("error"), len(rows)))
        return records


def epoch_rows(run_dir: Path) -> list[dict[str, Any]]:
    """The epoch rows of a run's metrics.jsonl (mid-epoch evaluation rows carry `step`)."""
    return [row for row in jsonl_rows(run_dir / "metrics.jsonl") if "step" not in row]


def jsonl_rows(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file, one per line; a torn or foreign line is skipped;
    none if the file is missing."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def objective(rows: list[dict[str, Any]], monitor: str, mode: str) -> float | None:
    """A trial's objective: the best (`mode`) finite value of `monitor` over its epochs."""
    values = [row[monitor] for row in rows if isinstance(row.get(monitor), (int, float))
              and math.isfinite(row[monitor])]
    if not values:
        return None
    return min(values) if mode == "min" else max(values)


def _stop_reason(run_dir: Path) -> str:
    try:
        env = json.loads((run_dir / "env.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    stopped = env.get("stopped") if isinstance(env, dict) else None
    return str(stopped.get("reason", "")) if isinstance(stopped, dict) else ""


def ranked(records: list[TrialRecord], mode: str) -> list[TrialRecord]:
    """Best objective first; trials without one last, in trial order."""
    sign = 1 if mode == "min" else -1
    return sorted(records, key=lambda r: (r.objective is None, sign * (r.objective or 0.0), r.trial.number))
