"""`pipeforge runs` and `pipeforge compare`: the runs in a folder, and runs side by side.

Control plane: reading run dirs imports no torch (`runs`); `compare --plot` imports matplotlib,
an optional extra (`plot`). `--json` output is stable: `runs` gives {"runs": [...], "skipped":
[...]}, `compare` gives {"runs": [...], "differences": [...]} (see README, "Experiments").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable

from rich.table import Table
from rich.text import Text

from pipeforge.cli_common import out
from pipeforge.runs import MISSING, Run, find_runs, metric_keys, recipe_differences, runs_of

TRANSPOSE_AT = 6  # more runs than this: the differences table has a row per run


def add_commands(command: Callable[..., Any]) -> None:
    """Add `runs` and `compare` with the CLI's `command(name, func, help)` factory."""
    runs = command("runs", cmd_runs, "list runs: status, epochs, best metric, duration")
    runs.add_argument("folder", type=Path, nargs="?", default=Path("runs"), metavar="DIR",
                      help="a folder of run dirs (and of sweep dirs holding run dirs); default runs/")
    runs.add_argument("--json", action="store_true", help="machine-readable output")

    compare = command("compare", cmd_compare, "compare runs: recipe differences, final and best metrics, learning curves")
    compare.add_argument("runs", type=Path, nargs="+", metavar="RUN",
                         help="a run dir, or a folder of run dirs (e.g. a sweep) compared as a whole")
    compare.add_argument("--json", action="store_true", help="machine-readable output")
    compare.add_argument("--plot", type=Path, metavar="FILE.png",
                         help='also draw the learning curves into FILE (.png, .svg or .pdf; a new file); '
                         'needs matplotlib: pip install "pipeforge[plot]"')


def cmd_runs(args: argparse.Namespace) -> int:
    runs, skipped = find_runs(args.folder)
    if args.json:
        out.print_json(json.dumps({"runs": [run.summary() for run in runs],
                                   "skipped": [vars(entry) for entry in skipped]}))
        return 0
    if runs:
        table = Table(title=Text(f"runs in {args.folder}"))
        # The short columns keep their width; the run and the best value wrap last, the note first.
        for index, column in enumerate(("run", "started", "status", "epochs", _best_title(runs), "duration")):
            table.add_column(column, overflow="fold", no_wrap=index > 0, min_width=16 if index == 0 else None)
        table.add_column("note", overflow="fold", ratio=1, min_width=12)
        for run in runs:
            planned = f"/{run.epochs_planned}" if run.epochs_planned is not None else ""
            table.add_row(*map(Text, (run.name, _started(run.started), run.status, f"{run.epochs}{planned}",
                                      _best(run, runs), _duration(run.duration_s), run.note or "")))
        out.print(table)
    else:
        out.print(Text(f"no runs in {args.folder}"))
    for entry in skipped:
        out.print(Text(f"skipped {entry.path}: {entry.reason}", style="dim"))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    runs = runs_of(args.runs)
    differences = recipe_differences(runs)
    drawn = None
    if args.plot is not None:
        from pipeforge.plot import plot_curves

        drawn = plot_curves(runs, args.plot)
    if args.json:
        document: dict[str, Any] = {
            "runs": [{**run.summary(), "final": run.final} for run in runs],
            "differences": [{"key": key, "values": [None if v is MISSING else v for v in values]}
                            for key, values in differences],
        }
        if args.plot is not None:
            document["plot"] = {"file": str(args.plot), "metrics": drawn}
        out.print_json(json.dumps(document))
        return 0
    _print_differences(runs, differences)
    _print_metrics(runs)
    if args.plot is not None:
        out.print(Text(f"wrote {args.plot} ({', '.join(drawn or [])})"))
    return 0


def _print_differences(runs: list[Run], differences: list[tuple[str, list[Any]]]) -> None:
    if not differences:
        out.print(Text("recipes: the same" if len(runs) > 1 else "recipes: one run, nothing to compare"))
        return
    table = Table(title="recipe differences")
    if len(runs) <= TRANSPOSE_AT:  # a column per run
        table.add_column("key", overflow="fold")
        for run in runs:
            table.add_column(Text(run.name), overflow="fold")
        for key, values in differences:
            table.add_row(Text(key), *(Text(_value(v)) for v in values))
    else:  # a sweep: a row per run, a column per key that differs
        table.add_column("run", overflow="fold")
        for key, _ in differences:
            table.add_column(Text(key), overflow="fold")
        for index, run in enumerate(runs):
            table.add_row(Text(run.name), *(Text(_value(values[index])) for _, values in differences))
    out.print(table)


def _print_metrics(runs: list[Run]) -> None:
    keys = metric_keys(runs)
    table = Table(title="metrics (best, then the last epoch's)")
    for column in ("run", "status", "epochs", _best_title(runs), *keys):
        table.add_column(Text(column), overflow="fold", no_wrap=column in ("status", "epochs"),
                         min_width=16 if column == "run" else None)
    for run in runs:
        final = run.final
        table.add_row(*map(Text, (run.name, run.status, str(run.epochs), _best(run, runs),
                                  *(_value(final.get(key, MISSING)) for key in keys))))
    out.print(table)


def _best_title(runs: list[Run]) -> str:
    """`best val_loss` when every run keeps its best by the same metric, else `best`."""
    names = {run.best_metric for run in runs if run.best is not None}
    return f"best {names.pop()}" if len(names) == 1 else "best"


def _best(run: Run, runs: list[Run]) -> str:
    """`0.4627 @4` (the best value and its epoch), with the metric (`val_loss=0.4627 @4`) when
    the runs do not all share it."""
    if run.best is None:
        return ""
    shared = _best_title(runs) != "best"
    return f"{'' if shared else f'{run.best_metric}='}{_value(run.best)} @{run.best_epoch}"


def _value(value: Any) -> str:
    if value is MISSING:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _started(started: str | None) -> str:
    return started[:16].replace("T", " ") if started else ""


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
