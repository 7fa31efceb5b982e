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
EXIT_TIME_LIMIT = 3  # stopped at trainer.max_time with a checkpoint: resume to go on
EXIT_INTERRUPTED = 130


class PipeforgeError(Exception):
    """Base of all pipeforge errors. `exit_code` is what the CLI exits with."""

    exit_code: int = EXIT_FAILURE


class UsageError(PipeforgeError):
    """The command line asks for something impossible (e.g. a run dir that is not empty)."""

    exit_code = EXIT_USAGE


# A message is read by a person: however large the input, it stays a few lines long.
SHOWN_CHARS = 80  # of one value quoted in a message
LINE_CHARS = 400  # of one rendered problem
LISTED_CHARS = 3000  # of all listed problems together; the rest are counted, not shown


def shorten(text: str, limit: int = SHOWN_CHARS, *, keep_end: bool = False) -> str:
    """`text`, cut to at most `limit` characters with an ellipsis when it is longer; `keep_end`
    keeps its end instead of its start (for a file path, whose name is at the end)."""
    if len(text) <= limit:
        return text
    return "…" + text[len(text) - limit + 1 :] if keep_end else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a recipe: where (dotted path, `--set …`, or a line and column of the
    file; empty when the whole file is meant), what is wrong, and a hint. `origin` says where
    the key was written when the recipe is a file: `line 12`, `base.toml, line 3` (an included
    file), `--set …`."""

    path: str
    message: str
    hint: str | None = None
    origin: str | None = None

    def render(self, source: str | None = None, origin: bool = False) -> str:
        """`source: path (origin): message; hint`, the origin only if asked, at most
        `LINE_CHARS` long (a huge key or value in the recipe is shown cut, never whole)."""
        where = [shorten(source, 200, keep_end=True)] if source else []
        place = shorten(self.path, 200)
        if origin and self.origin and self.origin != self.path:
            place = f"{place} ({shorten(self.origin, 200, keep_end=True)})" if place else shorten(self.origin, 200)
        where += [place] if place else []
        text = ": ".join([*where, self.message])
        return shorten(f"{text}; {self.hint}" if self.hint else text, LINE_CHARS)


class RecipeError(PipeforgeError):
    """A recipe (file or --set override) is malformed or names what is not registered.

    `problems` holds every problem found; the message lists as many as fit in a few KB and
    counts the rest."""

    exit_code = EXIT_USAGE

    def __init__(self, problems: list[Problem], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__(self._summary())

    def _summary(self) -> str:
        count = len(self.problems)
        head = f"{shorten(self.source or 'recipe', 200, keep_end=True)}: {count:,} problem{'s' if count != 1 else ''}"
        lines: list[str] = []
        used = 0
        for problem in self.problems:
            line = f"  - {problem.render(origin=True)}"
            if used + len(line) > LISTED_CHARS:
                break
            lines.append(line)
            used += len(line) + 1
        if len(lines) < count:
            rest = count - len(lines)
            lines.append(f"  … and {rest:,} more problem{'s' if rest != 1 else ''}")
        return "\n".join([head, *lines])


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


class TimeLimitReached(PipeforgeError):
    """A run reached `trainer.max_time` and stopped after writing a checkpoint; resumable."""

    exit_code = EXIT_TIME_LIMIT


class Interrupted(PipeforgeError):
    """A run stopped on SIGINT/SIGTERM after writing a checkpoint; exits 128 + the signal."""

    def __init__(self, message: str, signal_number: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signal_number
