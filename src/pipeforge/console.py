"""The console reporter: a plugin object the CLI registers for a run.

It shows a rich progress bar during each epoch (only on a terminal, and not with --quiet) and
one line of metrics per epoch (not with --quiet). It uses only the public lifecycle hooks.
Everything it prints is plain text: a run dir such as `exp[bold]` shows as it is.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text

from pipeforge.context import RunState
from pipeforge.hookspecs import hookimpl


def format_metrics(metrics: dict[str, Any]) -> str:
    """`train_loss 0.4123  val_accuracy 0.9150  …` with a stable key order."""
    parts = []
    for key, value in metrics.items():
        if key == "epoch":
            continue
        parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
    return "  ".join(parts)


class ConsoleReporter:
    def __init__(self, console: Console, *, progress: bool, lines: bool) -> None:
        self.console = console
        self.show_progress = progress
        self.show_lines = lines
        self._progress: Progress | None = None
        self._task: Any = None
        self._started = 0.0

    @hookimpl
    def on_fit_start(self, state: RunState) -> None:
        if self.show_lines:
            sizes = ", ".join(f"{k} {len(v)}" for k, v in state.datasets.splits.items())
            # Names and paths are the user's text, printed as they are: never read as markup.
            self.console.print(
                Text(state.recipe.run.name, style="bold")
                + Text(f" on {state.device}: {sizes} samples; run dir {state.run_dir}"),
                highlight=False,
            )
            summary = state.model_summary
            if summary:
                self.console.print(Text(
                    f"model: {summary['parameters']:,} parameters ({summary['trainable']:,} trainable), "
                    f"{summary['size_mb']:g} MB"), highlight=False)
        skipped = len(state.datasets.skipped)
        if skipped:
            # Said once, whether or not --quiet: the user should know data was left out.
            self.console.print(
                Text("warning: ", style="bold yellow")
                + Text(f"the dataset skipped {skipped} unreadable file{'s' if skipped != 1 else ''}; "
                       f"they are listed in {state.run_dir / 'skipped_files.txt'}"),
                highlight=False,
            )
        if self.show_progress:
            self._progress = Progress(
                TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(),
                console=self.console, transient=True,
            )
            self._progress.start()

    @hookimpl
    def on_epoch_start(self, state: RunState, epoch: int, steps: int) -> None:
        self._started = time.perf_counter()
        if self._progress is not None:
            label = f"{epoch}/{state.recipe.trainer.epochs}"
            self._task = self._progress.add_task("train", total=steps, epoch=label, loss="…")

    @hookimpl
    def on_batch_end(self, batch_index: int, loss: Any) -> None:
        if self._progress is not None:
            # Reading the loss syncs with the device, so the bar shows it only now and then.
            fields = {"loss": f"{loss.item():.4f}"} if batch_index % 50 == 0 else {}
            self._progress.update(self._task, advance=1, **fields)

    @hookimpl
    def on_epoch_end(self, state: RunState, epoch: int, metrics: dict[str, float]) -> None:
        if self._progress is not None:
            self._progress.remove_task(self._task)
        if self.show_lines:
            took = time.perf_counter() - self._started
            self.console.print(
                f"epoch {epoch}/{state.recipe.trainer.epochs}  {format_metrics(metrics)}  ({took:.1f}s)",
                highlight=False, markup=False,
            )

    @hookimpl
    def on_fit_end(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
