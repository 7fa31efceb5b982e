"""The run directory: everything a run leaves behind, and the rule that nothing is overwritten.

Layout: `recipe.toml` (resolved), `env.json`, `metrics.jsonl` (one JSON object per epoch),
`tensorboard/`, `model.pt` (state_dict), and `skipped_files.txt` when a dataset skipped inputs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

import tomli_w

from pipeforge.errors import UsageError


def default_path(run_name: str, root: Path = Path("runs")) -> Path:
    """`runs/<name>-<timestamp>`, with a suffix if that already exists."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = root / f"{run_name}-{stamp}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = root / f"{run_name}-{stamp}-{suffix}"
    return path


class RunDir:
    """A run's output directory, claimed empty and only ever added to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.created = False  # set by claim() when it made the directory

    @classmethod
    def claim(cls, path: Path | None, run_name: str, root: Path = Path("runs")) -> RunDir:
        """Create the run dir (default `runs/<name>-<timestamp>`); refuse a non-empty one."""
        if path is None:
            path = default_path(run_name, root)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise UsageError(
                f"run dir {path} already exists and is not empty; nothing was written. "
                "Choose another --run-dir (or omit it for a fresh timestamped one)."
            )
        existed = path.exists()
        path.mkdir(parents=True, exist_ok=True)
        run_dir = cls(path)
        run_dir.created = not existed
        return run_dir

    def discard_if_untrained(self) -> bool:
        """Remove this run dir if nothing was trained into it (no checkpoint was written).

        Only for a dir this process claimed (it was new or empty, so everything in it is
        pipeforge's own output of this attempt): a run that fails while building its data or
        model leaves no half-made run dir behind to block a retry with the same --run-dir.
        """
        if any((self.path / "checkpoints").glob("*.pt")):
            return False
        if self.created:
            shutil.rmtree(self.path)
        else:  # the user's own empty folder stays; only what this attempt wrote goes
            for child in self.path.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        return True

    def write_recipe(self, resolved: dict[str, Any], header: str) -> None:
        body = tomli_w.dumps(resolved)
        comment = "".join(f"# {line}\n" for line in header.splitlines())
        self._write_new("recipe.toml", comment + "\n" + body)

    def write_env(self, env: dict[str, Any]) -> None:
        self._write_new("env.json", json.dumps(env, indent=2, sort_keys=True) + "\n")

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run dir for one process; a second `run`/`--resume` on it is refused."""
        handle = open(self.path / ".lock", "a+", encoding="utf-8")
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                owner = handle.read().strip() or "?"
                raise UsageError(f"run dir {self.path} is in use by another pipeforge process (pid {owner})") from None
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            yield
        finally:
            handle.close()

    def write_skipped(self, skipped: list[tuple[str, str]]) -> None:
        """List the inputs a dataset left out (rewritten when a run is resumed)."""
        if skipped:
            lines = "".join(f"{path}\t{reason}\n" for path, reason in skipped)
            self._replace("skipped_files.txt", lines)

    def append_metrics(self, row: dict[str, Any]) -> None:
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def rewrite_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Make metrics.jsonl hold exactly `rows` (on resume: the checkpoint's history)."""
        self._replace("metrics.jsonl", "".join(json.dumps(row) + "\n" for row in rows))

    def rewrite_recipe(self, resolved: dict[str, Any], header: str) -> None:
        """Replace recipe.toml (on resume with a whitelisted change)."""
        comment = "".join(f"# {line}\n" for line in header.splitlines())
        self._replace("recipe.toml", comment + "\n" + tomli_w.dumps(resolved))

    def save_model(self, state_dict: dict[str, Any]) -> Path:
        """Write `model.pt` atomically: a reader never sees a half-written file."""
        from pipeforge.checkpoint import write_atomic

        target = self.path / "model.pt"
        write_atomic(target, state_dict)
        return target

    def _replace(self, name: str, text: str) -> None:
        tmp = self.path / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.path / name)

    def _write_new(self, name: str, text: str) -> None:
        with open(self.path / name, "x", encoding="utf-8") as f:
            f.write(text)
