"""Learning curves of runs as an image (`pipeforge compare --plot FILE.png`).

matplotlib is an optional extra (`pip install "pipeforge[plot]"`), imported only here and only
when a plot is asked for; it draws through its object API (`Figure`), so no GUI backend and no
global pyplot state are involved. Nothing here imports torch.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from pipeforge.errors import UsageError
from pipeforge.runs import Run

FORMATS = ("png", "svg", "pdf")
MAX_PANELS = 12  # a panel per metric; more would be too small to read


def plot_curves(runs: list[Run], path: Path) -> list[str]:
    """Draw the runs' epoch metrics into a new file at `path` (format from its suffix: png,
    svg, pdf): a panel per metrics.jsonl key (losses first), x = epoch, a line per run.
    Returns the keys drawn. `UsageError` when matplotlib is not installed, the file exists,
    no run has a finished epoch, or the file cannot be written (nothing is left behind)."""
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise UsageError(f"--plot {path}: the file name must end in {', '.join('.' + f for f in FORMATS)}")
    drawn = [run for run in runs if run.history]
    if not drawn:
        raise UsageError("--plot: none of the runs has finished an epoch; nothing to draw")
    keys = _keys(drawn)
    try:
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise UsageError('--plot needs matplotlib, an optional extra: pip install "pipeforge[plot]"') from None

    columns = min(3, len(keys))
    rows = math.ceil(len(keys) / columns)
    figure = Figure(figsize=(4.2 * columns, 3.2 * rows + 0.4 + 0.22 * min(len(drawn), 20)), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).flatten()
    colours = _colours(len(drawn))
    for axis, key in zip(axes, keys):
        for run, colour in zip(drawn, colours):
            points = [(row["epoch"], row[key]) for row in run.history
                      if isinstance(row.get(key), (int, float)) and not isinstance(row.get(key), bool)]
            if points:
                epochs, values = zip(*points)
                axis.plot(epochs, values, marker="o", markersize=3, color=colour, label=run.name)
        axis.set_title(key)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(True, alpha=0.3)
    for axis in axes[len(keys):]:
        axis.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=min(len(drawn), 3), fontsize="small")
    _save(figure, path, suffix)
    return keys


def _keys(runs: list[Run]) -> list[str]:
    """The numeric keys of the runs' epoch rows, losses first, at most `MAX_PANELS`."""
    keys = list(dict.fromkeys(key for run in runs for row in run.history for key, value in row.items()
                              if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool)))
    keys.sort(key=lambda key: (not key.endswith("loss"), key == "lr"))
    return keys[:MAX_PANELS]


def _colours(count: int) -> list[str]:
    """Distinct colours: matplotlib's ten-colour cycle, then tab20's for more runs, then repeats."""
    from matplotlib import colormaps

    palette = colormaps["tab10" if count <= 10 else "tab20"]
    size = 10 if count <= 10 else 20
    return [palette(index % size) for index in range(count)]


def _save(figure: object, path: Path, suffix: str) -> None:
    """Write a new file (an existing one is never replaced); a failed write leaves nothing."""
    try:
        file = open(path, "xb")
    except FileExistsError:
        raise UsageError(f"{path} already exists; nothing was written. Choose another file or remove it first.") from None
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with file:
            figure.savefig(file, format=suffix, dpi=100)  # type: ignore[attr-defined]
    except BaseException as exc:
        os.unlink(path)
        if isinstance(exc, OSError):
            raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise
