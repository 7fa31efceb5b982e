"""`pipeforge evaluate`, `predict` and `export`: commands that work on a finished run dir."""

from __future__ import annotations

from typing import Any, Callable


def add_commands(command: Callable[..., Any]) -> None:
    """Add the inference commands with the CLI's `command(name, func, help)` factory."""
