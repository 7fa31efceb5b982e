"""Atomic file writes: a reader (or a crash) sees either the old file or the complete new one.

Each write goes to a temp file beside the target, is flushed and fsynced, then renamed over it;
fsyncing the directory makes the rename itself durable. Used for checkpoints and `model.pt`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def write_atomic(path: Path, payload: Any, sync_dir: bool = True) -> None:
    """`torch.save` to `path` so that `path` is always either the old or the complete new file.

    `payload` may also be bytes (a `memoryview`, as `saver.serialize` returns): they are written
    as they are. With `sync_dir=False` the caller makes the rename durable (one directory fsync
    for several files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        if isinstance(payload, memoryview):
            f.write(payload)
        else:
            import torch

            torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    if sync_dir:
        fsync_dir(path.parent)


def link_atomic(source: Path, target: Path) -> None:
    """Make `target` another name for the complete file `source` (no second copy written).
    The caller fsyncs the directory."""
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)  # a leftover of pipeforge's own, from a crash
    os.link(source, tmp)
    os.replace(tmp, target)


def fsync_dir(directory: Path) -> None:
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
