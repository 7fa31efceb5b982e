"""The built-in CSV callback: one row per epoch in `<run dir>/metrics.csv`, for spreadsheets.

The header is the keys of the epoch rows of metrics.jsonl (`epoch`, `train_loss`,
`<split>_<metric>`, `lr`, …) in the order they first appear; the mid-epoch evaluations of
`trainer.eval_every_steps` (rows with a `step`) stay in metrics.jsonl only.

Resuming never duplicates or loses a row. A run killed after an epoch that its last checkpoint
does not cover has that epoch's row in the file already, and the resumed run trains the epoch
again: so, like metrics.jsonl, the file is rewritten on resume from the run's history as the
checkpoint holds it, and rows are appended from there. The callback keeps no state of its own
in checkpoints: the history is the state. Imports no torch.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from pydantic import Field

from pipeforge.context import BuildContext, RunState
from pipeforge.contract import Callback
from pipeforge.registry import Params


class CSVParams(Params):
    filename: str = Field(
        "metrics.csv", min_length=5, max_length=200, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\.csv$",
        description="Name of the CSV file in the run dir (a plain file name ending in .csv).",
    )


class CSVLogger(Callback):
    """Writes each epoch's row of metrics.jsonl as a CSV row, under a header of its keys."""

    def __init__(self, params: CSVParams) -> None:
        self.params = params
        self.path: Path | None = None
        self.columns: list[str] | None = None  # the header the file holds now

    def on_fit_start(self, state: RunState) -> None:
        self.path = state.run_dir / self.params.filename
        rows = epoch_rows(state.history)
        # A fresh run has no rows and no file yet; a resumed one gets exactly the checkpoint's epochs.
        if rows or self.path.exists():
            self._rewrite(rows)

    def on_epoch_end(self, state: RunState, metrics: dict[str, Any]) -> None:
        if self.columns is None or not set(metrics) <= set(self.columns):
            self._rewrite(epoch_rows(state.history))  # a new key: a wider header, every row again
            return
        with open(self.path, "a", encoding="utf-8", newline="") as handle:
            handle.write(to_csv([metrics], self.columns, header=False))

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        """Make the file hold exactly `rows` (atomically: a kill leaves the old or the new file)."""
        self.columns = columns_of(rows) if rows else None
        text = to_csv(rows, self.columns, header=True) if rows else ""
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(text, encoding="utf-8", newline="")
        os.replace(tmp, self.path)


def epoch_rows(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of `history` that end an epoch (mid-epoch evaluations carry a `step`)."""
    return [row for row in history if "step" not in row]


def columns_of(rows: list[dict[str, Any]]) -> list[str]:
    """Every key of `rows`, in the order the keys first appear."""
    return list(dict.fromkeys(key for row in rows for key in row))


def to_csv(rows: list[dict[str, Any]], columns: list[str], header: bool) -> str:
    """`rows` as CSV text (a key a row lacks is an empty cell)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def build(params: CSVParams, context: BuildContext) -> CSVLogger:
    return CSVLogger(params)
