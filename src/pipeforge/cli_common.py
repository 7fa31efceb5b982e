"""What every command module of the CLI shares: the consoles, plugin discovery with its
warnings, and how errors, warnings and the library's log messages are printed.

Command modules (`cli`, `cli_run`, `cli_inference`) import from here, never from each other.
Everything is printed as plain text: a path like `exp[bold]` shows as it is.
"""

from __future__ import annotations

import logging
from typing import Any

from rich.console import Console
from rich.text import Text

from pipeforge.plugins import Plugins, discover

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def discover_plugins(warn: bool = True) -> Plugins:
    """Installed plugins; each broken one is named in a warning (unless `warn` is False)."""
    plugins = discover()
    if warn:
        for plugin in plugins.broken:
            warning(f"plugin '{plugin.name}' from {plugin.distribution} {plugin.version} is {plugin.status}: {plugin.error}")
    return plugins


def error(message: str) -> None:
    err.print(Text("error: ", style="bold red") + Text(message))


def warning(message: str) -> None:
    err.print(Text("warning: ", style="bold yellow") + Text(message))


def summary(row: dict[str, Any]) -> str:
    """`epoch 3  train_loss …` for a metrics.jsonl row."""
    from pipeforge.console import format_metrics

    return f"epoch {row['epoch']}  {format_metrics(row)}"


class ConsoleLog(logging.Handler):
    """Shows the `pipeforge` logger's messages on stderr: warnings always, the rest unless quiet."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            warning(message)
        else:
            err.print(Text(message))


def show_log(quiet: bool) -> None:
    """Route the library's log messages to the console for this command."""
    logger = logging.getLogger("pipeforge")
    logger.handlers = [handler for handler in logger.handlers if not isinstance(handler, ConsoleLog)]
    logger.addHandler(ConsoleLog())
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False
