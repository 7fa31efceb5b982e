"""Every error pipeforge raises on purpose, and the exit code the CLI maps it to.

Bad input (a recipe, a plugin, data on disk, a checkpoint) is reported with one of these,
never with a traceback. Each error carries the *place* (file, dotted key, plugin name) in
its message; `RecipeError` can carry several problems at once so a user fixes them in one go.
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class PipeforgeError(Exception):
    """Base of all pipeforge errors. `exit_code` is what the CLI exits with."""

    exit_code: int = EXIT_FAILURE


class UsageError(PipeforgeError):
    """The command line asks for something impossible (e.g. a run dir that is not empty)."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a recipe: where (dotted path), what is wrong, and a hint."""

    path: str
    message: str
    hint: str | None = None

    def render(self, source: str | None = None) -> str:
        where = f"{source}: {self.path}" if source else self.path
        text = f"{where}: {self.message}"
        return f"{text}; {self.hint}" if self.hint else text


class RecipeError(PipeforgeError):
    """A recipe (file or --set override) is malformed or names what is not registered."""

    exit_code = EXIT_USAGE

    def __init__(self, problems: list[Problem], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__(self._summary())

    def _summary(self) -> str:
        count = len(self.problems)
        head = f"{self.source or 'recipe'}: {count} problem{'s' if count != 1 else ''}"
        lines = "\n".join(f"  - {p.render()}" for p in self.problems)
        return f"{head}\n{lines}"


class PluginError(PipeforgeError):
    """A plugin failed to load or register, or claims a name another plugin claims."""

    exit_code = EXIT_USAGE


class DataError(PipeforgeError):
    """A dataset's files are missing, unreadable or malformed. Names the path and a remedy."""

    exit_code = EXIT_USAGE


class CheckpointError(PipeforgeError):
    """A checkpoint is missing, truncated, not a pipeforge checkpoint, or carries code."""

    exit_code = EXIT_USAGE


class TrainingError(PipeforgeError):
    """Training could not go on (e.g. the loss became non-finite)."""

    exit_code = EXIT_FAILURE


class Interrupted(PipeforgeError):
    """A run stopped on SIGINT/SIGTERM after writing a checkpoint; exits 128 + the signal."""

    def __init__(self, message: str, signal_number: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signal_number
