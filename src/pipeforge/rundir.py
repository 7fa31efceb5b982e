"""The run directory: everything a run leaves behind, and the rule that nothing is lost.

Layout: `recipe.toml` (resolved), `env.json`, `metrics.jsonl` (one JSON object per epoch),
`tensorboard/`, `model.pt` (state_dict), and `skipped_files.txt` when a dataset skipped inputs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Iterator

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


LOCK = ".lock"


def lock_dir(path: Path, busy: str) -> IO[str]:
    """Take `path`'s lock for this process: an exclusive flock on `path/.lock`, which then holds
    our pid; released when the returned file is closed (or the process dies). Raises
    `UsageError(busy)` — `{path}` and `{pid}` (the holder's) filled in — if another holds it."""
    handle = open(path / LOCK, "a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "?"
        handle.close()
        raise UsageError(busy.format(path=path, pid=owner)) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle
# What claiming and setting up a run writes; a failed run made of nothing else is removed.
SETUP_FILES = frozenset({LOCK, "recipe.toml", "env.json", "skipped_files.txt"})


class RunDir:
    """A run's output directory: claimed new or empty, locked by one process at a time.

    pipeforge removes only what it created in this invocation, and never a run dir that holds
    a checkpoint, metrics or logs (see `discard_if_untrained`).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.created = False  # set by claim() when this process made the directory
        self._lock: Any = None  # the open lock file while this process holds the run dir

    @classmethod
    def claim(cls, path: Path | None, run_name: str, root: Path = Path("runs")) -> RunDir:
        """Create the run dir (default `runs/<name>-<timestamp>`), or take an empty one, and lock
        it for this process; refuse a non-empty one or one another process holds.

        The emptiness is checked again under the lock: two processes claiming the same path at
        once cannot both win, and the loser changes nothing. Release with `release()`.
        """
        if path is None:
            path = default_path(run_name, root)
        run_dir = cls(path)
        try:
            if path.is_symlink() and not path.exists():
                raise UsageError(f"cannot create the run dir {path}: it is a symbolic link to {os.readlink(path)}, "
                                 "which does not exist; nothing was written. Choose another --run-dir.")
            # A dir holding only a lock file was claimed by a run killed before it wrote anything:
            # it may be claimed again. Whether another process still holds it, the lock decides.
            _refuse_if_taken(path, ignore=LOCK)
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                path.mkdir()
                run_dir.created = True
            except FileExistsError:
                pass
            run_dir._acquire()
        except OSError as exc:  # a parent that is a file, a name too long, a read-only place…
            if run_dir.created:
                path.rmdir()
            raise UsageError(f"cannot create the run dir {path}: {exc.strerror or exc}; "
                             "choose another --run-dir") from None
        try:
            _refuse_if_taken(path, ignore=LOCK)
        except UsageError:
            run_dir.release()
            raise
        return run_dir

    @classmethod
    def check_claimable(cls, path: Path) -> None:
        """Raise now the `UsageError` that `claim(path)` would raise, and leave nothing behind
        but missing parents: for a launcher whose processes will claim `path` themselves."""
        run_dir = cls.claim(path, "")
        run_dir.discard_if_untrained()
        run_dir.release()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run dir for one process (resume); a second `run`/`--resume` on it is refused,
        and so is a run dir, or a `checkpoints` folder in it, where no file can be written:
        `UsageError` before anything is changed."""
        try:
            self._acquire()
        except OSError as exc:
            raise UsageError(f"cannot lock the run dir {self.path}: {exc.strerror or exc}; nothing was changed") from None
        try:
            for folder in (self.path, self.path / "checkpoints"):
                _check_writable(folder)
            yield
        finally:
            self.release()

    def _acquire(self) -> None:
        self._lock = lock_dir(self.path, "run dir {path} is in use by another pipeforge process (pid {pid}); "
                                         "nothing was changed")

    def release(self) -> None:
        """Let another process take the run dir (e.g. `--resume`)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def discard_if_untrained(self) -> bool:
        """After a failed run: remove what setting it up wrote, if the run left nothing else.

        Only while this process holds the run dir (it claimed it new or empty, so the set-up
        files are its own). Anything else in it — a checkpoint, metrics.jsonl, a TensorBoard
        event file, whatever a callback wrote — keeps the whole dir as it is. Empty folders go;
        the run dir itself only if this process created it. Returns whether anything was removed.
        """
        if self._lock is None:
            return False
        own, folders = [], []
        for top, dirs, files in os.walk(self.path):
            here = Path(top)
            folders += [here / d for d in dirs]
            for name in files:
                if here != self.path or name not in SETUP_FILES:
                    return False  # results or logs: nothing is removed
                own.append(here / name)
            if any((here / d).is_symlink() for d in dirs):
                return False
        for path in own:
            path.unlink()
        self.release()
        for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):
            folder.rmdir()
        if self.created:
            self.path.rmdir()
        return True

    def write_recipe(self, resolved: dict[str, Any], header: str) -> None:
        body = tomli_w.dumps(resolved)
        comment = "".join(f"# {line}\n" for line in header.splitlines())
        self._write_new("recipe.toml", comment + "\n" + body)

    def write_env(self, env: dict[str, Any]) -> None:
        self._write_new("env.json", json.dumps(env, indent=2, sort_keys=True) + "\n")

    def update_env(self, **fields: Any) -> None:
        """Add `fields` to env.json (e.g. why a run stopped early), replacing it atomically."""
        path = self.path / "env.json"
        env = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        env.update(fields)
        self._replace("env.json", json.dumps(env, indent=2, sort_keys=True) + "\n")

    def write_skipped(self, skipped: list[tuple[str, str]]) -> None:
        """List the inputs a dataset left out (rewritten when a run is resumed).

        One `path<TAB>reason` line each, in UTF-8. A file name is bytes to the OS: bytes that
        are not UTF-8 are written as `\\xNN`, and tabs, newlines and other control characters
        as escapes, so that every entry stays one line and writing the list never fails.
        """

        def one_line(text: str) -> str:
            try:  # undecodable bytes of a file name come from os.fsdecode as lone surrogates
                text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            except UnicodeEncodeError:  # a lone surrogate that no file name decoded to
                text = text.encode("utf-8", "backslashreplace").decode("utf-8")
            return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)

        if skipped:
            lines = "".join(f"{one_line(path)}\t{one_line(reason)}\n" for path, reason in skipped)
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

    def _replace(self, name: str, text: str) -> None:
        tmp = self.path / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.path / name)

    def _write_new(self, name: str, text: str) -> None:
        with open(self.path / name, "x", encoding="utf-8") as f:
            f.write(text)


def _check_writable(folder: Path) -> None:
    """`UsageError` naming `folder` when it exists and a new file cannot be made in it.

    Made and removed at once: the permission bits do not say it for root, nor for a read-only
    mount or an immutable folder; the kernel's answer does."""
    if not folder.is_dir():
        return
    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".pipeforge-write-test-")
    except OSError as exc:
        raise UsageError(f"cannot write in {folder}: {exc.strerror or exc}; nothing was changed. "
                         "Make it writable, or copy the run dir somewhere writable.") from None
    os.close(handle)
    os.unlink(probe)


def _refuse_if_taken(path: Path, ignore: str | None = None) -> None:
    """Refuse a run dir that is not a directory or holds anything (besides `ignore`)."""
    if not path.exists():
        return
    if path.is_dir() and all(child.name == ignore for child in path.iterdir()):
        return
    raise UsageError(
        f"run dir {path} already exists and is not empty; nothing was written. "
        "Choose another --run-dir (or omit it for a fresh timestamped one)."
    )
