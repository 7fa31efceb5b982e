"""Reading finished and running runs back: what `pipeforge runs` lists and `compare` compares.

A run dir is a folder holding `recipe.toml` and `metrics.jsonl` or `env.json` (see `rundir`).
A *group* is a folder of run dirs, such as a sweep's: `runs/`, or `runs/sweep-lr/` with a
run dir per trial. Everything here only reads, imports no torch and never raises on what it
finds: a damaged or foreign folder is a `Skipped` entry or a run with status "damaged".

A run's status: "running" (a process holds its lock), "finished", "interrupted" (stopped by a
signal, `trainer.max_time` or killed; `pipeforge run --resume` continues it), "failed" (an
error stopped it), "damaged" (its recipe.toml cannot be read). It comes from `env.json`'s
`ended` record, written when a run ends (null while it trains: a run killed outright keeps
that), and for run dirs of older versions from whether `model.pt` exists.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeforge.errors import RecipeError, UsageError, shorten
from pipeforge.recipe_file import read_toml
from pipeforge.rundir import LOCK

MAX_METRICS_BYTES = 64 * 2**20  # a metrics.jsonl of a million epochs is not one pipeforge wrote
STATUSES = ("running", "finished", "interrupted", "failed", "damaged")


@dataclass
class Run:
    """One run dir as `pipeforge runs --json` shows it (`history` and `recipe` left out there)."""

    name: str
    path: str
    status: str
    started: str | None = None  # env.json's started_at, local time with its offset
    epochs: int = 0  # epochs with a row in metrics.jsonl
    epochs_planned: int | None = None  # the recipe's trainer.epochs
    best_metric: str | None = None  # trainer.best_metric, or the default the run used
    best: float | None = None
    best_epoch: int | None = None
    duration_s: float | None = None  # from started to the end (or now); a resumed run counts its pause
    note: str | None = None  # why it stopped, what is damaged
    history: list[dict[str, Any]] = field(default_factory=list, repr=False)  # the epoch rows
    recipe: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def final(self) -> dict[str, Any]:
        """The last epoch's row (empty before the first epoch ends)."""
        return self.history[-1] if self.history else {}

    def summary(self) -> dict[str, Any]:
        """The JSON-able fields of `pipeforge runs --json`."""
        row = asdict(self)
        del row["history"], row["recipe"]
        return row


@dataclass
class Skipped:
    """A folder that was looked at and is no run dir (or a run dir that could not be read)."""

    path: str
    reason: str


def is_run_dir(path: Path) -> bool:
    """Whether `path` is a folder with `recipe.toml` and `metrics.jsonl` or `env.json`."""
    return path.is_dir() and (path / "recipe.toml").is_file() and (
        (path / "metrics.jsonl").is_file() or (path / "env.json").is_file())


def find_runs(folder: Path) -> tuple[list[Run], list[Skipped]]:
    """The runs in `folder`: itself if it is a run dir, else each run dir in it and in each
    group in it (one level down: `runs/sweep/trial-1`), sorted by start time; and the folders
    skipped, with why. `UsageError` if `folder` is not a folder."""
    if not folder.is_dir():
        why = "does not exist" if not folder.exists() else "is not a folder"
        raise UsageError(f"{folder} {why}; give a folder of runs (default runs/)")
    if is_run_dir(folder):
        return [read_run(folder, str(folder))], []
    runs: list[Run] = []
    skipped: list[Skipped] = []
    for child in _children(folder, skipped):
        if is_run_dir(child):
            runs.append(read_run(child, child.name))
        elif any(is_run_dir(grandchild) for grandchild in _children(child, [])):
            for grandchild in _children(child, skipped):
                if is_run_dir(grandchild):
                    runs.append(read_run(grandchild, f"{child.name}/{grandchild.name}"))
                else:
                    skipped.append(Skipped(str(grandchild), _why_not(grandchild)))
        else:
            skipped.append(Skipped(str(child), _why_not(child)))
    runs.sort(key=lambda run: (run.started is None, run.started or "", run.name))
    return runs, skipped


def runs_of(targets: list[Path]) -> list[Run]:
    """The runs named by `targets` for `compare`: each a run dir or a group of them (a
    sweep dir: its runs, by name). `UsageError` naming a target that is neither."""
    runs: list[Run] = []
    for target in targets:
        if is_run_dir(target):
            runs.append(read_run(target, str(target)))
            continue
        members = [child for child in _children(target, []) if is_run_dir(child)] if target.is_dir() else []
        if not members:
            why = "does not exist" if not target.exists() else "is neither a run dir nor a folder of run dirs"
            raise UsageError(f"{target} {why} (a run dir holds recipe.toml and metrics.jsonl)")
        runs += [read_run(child, str(child)) for child in sorted(members)]
    return runs


def read_run(path: Path, name: str) -> Run:
    """Everything `runs` and `compare` show of the run dir at `path`."""
    run = Run(name=name, path=str(path), status="interrupted")
    env, notes = _read_env(path)
    run.started = env.get("started_at") if isinstance(env.get("started_at"), str) else None
    try:
        run.recipe = read_toml(path / "recipe.toml")
    except RecipeError as exc:
        first = exc.problems[0].render() if exc.problems else str(exc)
        run.status, run.note = "damaged", shorten(f"recipe.toml cannot be read: {first}", 200)
        return run
    rows, bad = _read_metrics(path / "metrics.jsonl")
    if bad:
        notes.append(bad)
    run.history = [row for row in rows if "step" not in row]  # mid-epoch evaluations carry their step
    run.epochs = len(run.history)
    trainer = run.recipe.get("trainer") if isinstance(run.recipe.get("trainer"), dict) else {}
    run.epochs_planned = trainer.get("epochs") if type(trainer.get("epochs")) is int else None
    run.best_metric = best_metric_key(run.recipe, run.history)
    run.best, run.best_epoch = best_of(run.history, run.best_metric)
    run.status, why, ended_at = _status(path, env)
    notes = [why, *notes] if why else notes
    run.duration_s = _duration(run.started, ended_at, path, running=run.status == "running")
    run.note = shorten("; ".join(notes), 300) if notes else None
    return run


def best_metric_key(recipe: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The metric a run keeps its best checkpoint by (as the saver picks it): `trainer.best_metric`,
    else the loss of the first split evaluated, else `train_loss`."""
    trainer = recipe.get("trainer") if isinstance(recipe.get("trainer"), dict) else {}
    if isinstance(trainer.get("best_metric"), str):
        return trainer["best_metric"]
    splits = trainer.get("eval_splits")
    if isinstance(splits, list) and splits and isinstance(splits[0], str):
        return f"{splits[0]}_loss"
    for key in rows[0] if rows else ():
        if key.endswith("_loss") and key not in ("train_loss", "train_eval_loss"):
            return key
    return "train_loss"


def best_of(rows: list[dict[str, Any]], key: str) -> tuple[float | None, int | None]:
    """The best value of `key` over the epoch rows and its epoch: lowest for a loss, else highest."""
    values = [(row[key], row.get("epoch")) for row in rows
              if isinstance(row.get(key), (int, float)) and not isinstance(row.get(key), bool)]
    if not values:
        return None, None
    pick = min if key.endswith("loss") else max
    return pick(values, key=lambda pair: pair[0])


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A recipe as dotted keys: tables and arrays of tables opened (`metrics[0].name`), other
    arrays kept whole as values."""
    out: dict[str, Any] = {}
    stack: list[tuple[str, Any]] = [(prefix, value)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict) and node:
            stack += [(f"{path}.{key}" if path else str(key), item) for key, item in reversed(node.items())]
        elif isinstance(node, list) and node and all(isinstance(item, dict) for item in node):
            stack += [(f"{path}[{index}]", item) for index, item in reversed(list(enumerate(node)))]
        else:
            out[path] = node
    return out


MISSING = object()  # a key one of the compared recipes does not have


def recipe_differences(runs: list[Run]) -> list[tuple[str, list[Any]]]:
    """(dotted key, each run's value or `MISSING`) for every key whose value is not the same
    in all the runs' flattened recipes, in the order the keys first appear."""
    flat = [flatten(run.recipe) for run in runs]
    keys = list(dict.fromkeys(key for one in flat for key in one))
    found = []
    for key in keys:
        values = [one.get(key, MISSING) for one in flat]
        if any(value is MISSING or value != values[0] or type(value) is not type(values[0]) for value in values):
            found.append((key, values))
    return found


def metric_keys(runs: list[Run]) -> list[str]:
    """The metrics.jsonl keys of the runs' last epochs, in the order first written (not `epoch`)."""
    return list(dict.fromkeys(key for run in runs for key in run.final if key != "epoch"))


# ------------------------------------------------------------------------------ reading


def _children(folder: Path, skipped: list[Skipped]) -> list[Path]:
    """The folders in `folder` (links to folders too), by name; hidden ones left out."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        skipped.append(Skipped(str(folder), f"cannot be listed: {exc.strerror or exc}"))
        return []
    return [entry for entry in entries if not entry.name.startswith(".") and _is_dir(entry)]


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def _why_not(path: Path) -> str:
    if not (path / "recipe.toml").is_file():
        return "not a run dir (no recipe.toml)"
    return "not a run dir (no metrics.jsonl or env.json)"


def _read_env(path: Path) -> tuple[dict[str, Any], list[str]]:
    try:
        with open(path / "env.json", "rb") as file:
            raw = file.read(MAX_METRICS_BYTES + 1)
    except FileNotFoundError:
        return {}, []
    except OSError as exc:
        return {}, [f"env.json cannot be read: {exc.strerror or exc}"]
    try:
        env = json.loads(raw)
    except (ValueError, RecursionError):
        return {}, ["env.json is damaged"]
    return (env, []) if isinstance(env, dict) else ({}, ["env.json is damaged"])


def _read_metrics(path: Path) -> tuple[list[dict[str, Any]], str | None]:
    """The rows of metrics.jsonl, and a note on lines that are not rows (a run killed while
    writing one leaves a cut last line)."""
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_METRICS_BYTES + 1)
    except FileNotFoundError:
        return [], None
    except OSError as exc:
        return [], f"metrics.jsonl cannot be read: {exc.strerror or exc}"
    if len(raw) > MAX_METRICS_BYTES:
        return [], f"metrics.jsonl is larger than {MAX_METRICS_BYTES // 2**20} MB: not read"
    rows, bad = [], 0
    for line in raw.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            row = None
        if isinstance(row, dict) and type(row.get("epoch")) is int:
            rows.append(row)
        else:
            bad += 1
    return rows, (f"{bad} unreadable line{'s' if bad != 1 else ''} in metrics.jsonl" if bad else None)


def _status(path: Path, env: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """(status, why, when it ended) of a run dir."""
    if _held(path / LOCK):
        return "running", None, None
    stopped = env.get("stopped") if isinstance(env.get("stopped"), dict) else {}
    early = f"stopped early: {stopped['reason']}" if isinstance(stopped.get("reason"), str) else None
    if "ended" not in env:  # a run dir of an older pipeforge: only its files tell
        if (path / "model.pt").is_file():
            return "finished", early, None
        return "interrupted", "ended without saying how (killed?); --resume continues it", None
    ended = env["ended"]
    if not isinstance(ended, dict) or ended.get("status") not in ("finished", "interrupted", "failed"):
        return "interrupted", "ended without saying how (killed?); --resume continues it", None
    at = ended.get("at") if isinstance(ended.get("at"), str) else None
    if ended["status"] == "finished":
        return "finished", early, at
    error = ended.get("error") if isinstance(ended.get("error"), str) else None
    if error and ended["status"] == "interrupted":  # "stopped by SIGINT in epoch 3 after step 9; checkpoint…"
        error = error.split("; ")[0]
    return ended["status"], error, at


def _held(lock: Path) -> bool:
    """Whether a live process holds the run dir's lock. The lock file names the last holder's
    pid; only if that process still exists is the lock itself asked (a shared, non-blocking
    flock, let go at once), so a finished run's dir is never touched."""
    try:
        text = lock.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return False
    if not text.isdigit() or len(text) > 10:
        return False
    try:
        os.kill(int(text), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        pass  # alive, another user's (or not a pid): let the lock say
    try:
        handle = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(handle)  # closing lets go of the shared lock, if taken
    return False


def _duration(started: str | None, ended: str | None, path: Path, running: bool) -> float | None:
    """Seconds from `started` to `ended` (else to now while running, else to the run's last
    write), or None when the start is unknown."""
    start = _timestamp(started)
    if start is None:
        return None
    end = _timestamp(ended)
    if end is None:
        end = time.time() if running else _last_write(path)
    return max(end - start, 0.0) if end is not None else None


def _timestamp(text: str | None) -> float | None:
    """Seconds since the epoch of env.json's `%Y-%m-%dT%H:%M:%S%z` (local time without an offset)."""
    for layout in ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"):
        try:
            return datetime.strptime(text or "", layout).timestamp()
        except (ValueError, OverflowError, OSError):
            continue
    return None


def _last_write(path: Path) -> float | None:
    times = []
    for name in ("metrics.jsonl", "model.pt", "env.json"):
        try:
            times.append((path / name).stat().st_mtime)
        except OSError:
            pass
    try:
        times += [entry.stat().st_mtime for entry in (path / "checkpoints").iterdir()]
    except OSError:
        pass
    return max(times) if times else None
