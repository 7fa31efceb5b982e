"""Checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is a dict of tensors and plain values (no pickled objects), written atomically —
temp file, flush + fsync, rename, fsync the directory — so a reader never sees half of one and a
crash during a write leaves the previous checkpoint usable. Loading always uses
`torch.load(weights_only=True)`: a file carrying a pickle payload is refused and runs no code.

Layout in the run dir: `checkpoints/step-<global step>.pt` (the last `keep` of them) and
`checkpoints/best.pt` (best epoch by the chosen metric).
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import torch

from pipeforge import __version__
from pipeforge.errors import CheckpointError

FORMAT = "pipeforge-checkpoint"
FORMAT_VERSION = 1
STEP_FILE = re.compile(r"^step-(\d+)\.pt$")


def write_atomic(path: Path, payload: Any) -> None:
    """`torch.save` to `path` so that `path` is always either the old or the complete new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # make the rename itself durable
    finally:
        os.close(directory)


def load(path: Path) -> dict[str, Any]:
    """Load and check a pipeforge checkpoint; raise `CheckpointError` for anything else."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle payload, foreign format…
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "Unsupported global" in str(exc) or "Unsupported operand" in str(exc):
            reason = "it contains pickled Python objects, which pipeforge never loads (no code was run)"
        raise CheckpointError(f"{path}: not a readable pipeforge checkpoint: {reason}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a pipeforge checkpoint (no '{FORMAT}' marker)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {payload.get('format_version')} is not supported "
            f"(this pipeforge reads format {FORMAT_VERSION})"
        )
    return payload


def step_files(directory: Path) -> list[Path]:
    """Step checkpoints in `directory`, oldest first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := STEP_FILE.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_valid(directory: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest step checkpoint that loads, skipping damaged ones; None if there is none."""
    for path in reversed(step_files(directory)):
        try:
            return path, load(path)
        except CheckpointError:
            continue
    return None


def prune(directory: Path, keep: int) -> None:
    """Remove all but the newest `keep` step checkpoints (pipeforge's own files only)."""
    for path in step_files(directory)[:-keep] if keep > 0 else []:
        path.unlink(missing_ok=True)


# ------------------------------------------------------------------------------ RNG state


def capture_rng() -> dict[str, Any]:
    """Every RNG state as tensors and plain values (so `weights_only` loading accepts it)."""
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    try:
        import numpy
    except ImportError:
        return state
    name, keys, pos, has_gauss, cached = numpy.random.get_state()
    state["numpy"] = {"name": name, "keys": torch.from_numpy(keys.astype("int64")), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached": float(cached)}
    return state


def restore_rng(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"].tolist()), py["gauss"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy

        np_state = state["numpy"]
        numpy.random.set_state((np_state["name"], np_state["keys"].numpy().astype("uint32"),
                                np_state["pos"], np_state["has_gauss"], np_state["cached"]))


def header() -> dict[str, Any]:
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "pipeforge": __version__}
