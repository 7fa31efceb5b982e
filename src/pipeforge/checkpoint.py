"""Checkpoints: the one owner of a run's saved state, its file format and how it is read.

A `Checkpoint` holds everything needed to continue a run exactly where it stopped. On disk it is
a dict of tensors and plain values (no pickled objects) with a format marker and version; only
`Checkpoint.to_payload` / `Checkpoint.from_payload` know its keys. Every file pipeforge reads
with torch goes through `read_torch_file`: `torch.load(weights_only=True)`, with every failure
turned into a `CheckpointError` naming the file, so a file carrying a pickle payload runs no code.

Layout in the run dir: `checkpoints/step-<global step>.pt` (the last `keep` of them) and
`checkpoints/best.pt` (best epoch by the chosen metric). Writing them during a run: `saver.py`.
"""

from __future__ import annotations

import random
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pipeforge.version import __version__
from pipeforge.errors import CheckpointError

FORMAT = "pipeforge-checkpoint"
# Version 1: pipeforge 0.1.0. Version 2 adds `callbacks` (each callback's state_dict), `scaler`,
# `grads`, `ema` and the position's gradient-norm sums. A later
# version that adds fields must still read every earlier one (tests/data/format1-run is a
# version-1 checkpoint kept for that).
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
STEP_FILE = re.compile(r"^step-(\d+)\.pt$")


@dataclass
class EpochProgress:
    """Where the current epoch stands: enough to continue it after a checkpoint."""

    order_state: torch.Tensor  # the shuffle generator's state when the epoch began
    batches_done: int = 0
    loss_sum: torch.Tensor | None = None  # stays on the device: no host sync per step
    samples: int = 0
    grad_norm_sum: torch.Tensor | None = None  # pre-clip norms so far (log_grad_norm), on the device
    grad_norm_steps: int = 0

    def add_grad_norm(self, norm: torch.Tensor) -> None:
        self.grad_norm_sum = norm.detach().float() if self.grad_norm_sum is None else self.grad_norm_sum + norm.detach().float()
        self.grad_norm_steps += 1

    def mean_grad_norm(self) -> float:
        """The epoch's mean pre-clip gradient norm (waits for the device once)."""
        if self.grad_norm_sum is None or not self.grad_norm_steps:
            return float("nan")
        return (self.grad_norm_sum / self.grad_norm_steps).item()


@dataclass
class Position:
    """The saved `EpochProgress`, summed over every rank, in samples rather than this process's
    batches, so a run checkpointed on N processes continues on M."""

    order_state: torch.Tensor
    batches_done: int
    loss_sum: torch.Tensor
    samples: int
    world_size: int = 1
    grad_norm_sum: torch.Tensor | None = None  # the same on every rank (norms of all-reduced gradients)
    grad_norm_steps: int = 0


@dataclass
class Checkpoint:
    """One checkpoint: weights, optimizer and scheduler, where training stands, RNGs, history.

    `epochs_done` counts finished epochs (a mid-epoch checkpoint continues epoch
    `epochs_done + 1` at `position`); `best` is the best value of the run's best metric so far;
    `classes` and `example_input` (one training sample) are what predict and export need;
    `callbacks` maps a callback's key (`<index>.<name>` in the recipe) to its `state_dict()`.
    """

    recipe: dict[str, Any]
    model: dict[str, Any]
    optimizer: dict[str, Any] | None
    scheduler: dict[str, Any] | None
    epochs_done: int
    global_step: int
    position: Position
    rng: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    best: float | None = None
    classes: list[str] | None = None
    example_input: torch.Tensor | None = None
    callbacks: dict[str, Any] = field(default_factory=dict)
    scaler: dict[str, Any] | None = None  # the fp16 gradient scaler's state
    grads: dict[str, torch.Tensor] | None = None  # a mid-accumulation-group checkpoint's gradients so far
    ema: dict[str, Any] | None = None  # the AveragedModel's state (trainer.ema_decay)

    def to_payload(self) -> dict[str, Any]:
        """The dict `torch.save` writes: tensors and plain values only."""
        p = self.position
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION, "pipeforge": __version__,
            "recipe": self.recipe,
            "model": self.model, "optimizer": self.optimizer, "scheduler": self.scheduler,
            "epochs_done": self.epochs_done,
            "global_step": self.global_step,
            "progress": {"order_state": p.order_state, "batches_done": p.batches_done,
                         "loss_sum": p.loss_sum, "samples": p.samples, "world_size": p.world_size,
                         "grad_norm_sum": p.grad_norm_sum, "grad_norm_steps": p.grad_norm_steps},
            "rng": self.rng,
            "history": self.history,
            "best": self.best,
            "classes": self.classes,
            "example_input": self.example_input,
            "callbacks": self.callbacks,
            "scaler": self.scaler,
            "grads": self.grads,
            "ema": self.ema,
        }

    @classmethod
    def from_payload(cls, payload: Any, path: Path) -> Checkpoint:
        """Check the marker, the version and every field; raise `CheckpointError` naming `path`."""
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not a pipeforge checkpoint (no '{FORMAT}' marker)")
        version = payload.get("format_version")
        if version not in READABLE_VERSIONS:
            newer = isinstance(version, int) and version > FORMAT_VERSION
            raise CheckpointError(
                f"{path}: checkpoint format {version!r} is not supported (this pipeforge "
                f"{__version__} reads format {', '.join(map(str, READABLE_VERSIONS))})"
                + ("; it was written by a newer pipeforge: upgrade to use it" if newer else "")
            )
        try:
            progress = payload["progress"]
            position = Position(progress["order_state"], int(progress["batches_done"]), progress["loss_sum"],
                                int(progress["samples"]), int(progress.get("world_size", 1)),
                                progress.get("grad_norm_sum"), int(progress.get("grad_norm_steps", 0)))
            found = cls(
                recipe=payload["recipe"], model=payload["model"], optimizer=payload["optimizer"],
                scheduler=payload["scheduler"], epochs_done=int(payload["epochs_done"]),
                global_step=int(payload["global_step"]), position=position, rng=payload["rng"],
                history=list(payload["history"]), best=payload.get("best"),
                classes=payload.get("classes"), example_input=payload.get("example_input"),
                callbacks=dict(payload.get("callbacks") or {}),  # format 1 has none of these three
                scaler=payload.get("scaler"), grads=payload.get("grads"), ema=payload.get("ema"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: a damaged pipeforge checkpoint: {_field_problem(exc)}") from None
        if not isinstance(found.model, dict) or not isinstance(position.order_state, torch.Tensor):
            raise CheckpointError(f"{path}: a damaged pipeforge checkpoint: its model or position is not what pipeforge writes")
        return found


def _field_problem(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"the field {exc.args[0]!r} is missing"
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


# ------------------------------------------------------------------------------ reading


def read_torch_file(path: Path, what: str = "checkpoint") -> Any:
    """`torch.load(path, weights_only=True)` onto the CPU; any failure is a `CheckpointError`.

    The one place pipeforge loads a torch file: a pickle payload is refused and runs no code;
    a missing, empty, truncated or foreign file gets one message naming `path` (`what` says
    what was expected, e.g. "weights file"), and so does a damaged one: every record's CRC-32
    is checked first, since torch.load would load a flipped bit in a tensor without a word.
    """
    if not path.is_file():
        raise CheckpointError(f"{path}: no such {what}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: not a readable {what}: the file is empty")
    damage = _archive_damage(path)
    if damage is not None:
        raise CheckpointError(f"{path}: not a readable {what}: the file is damaged ({damage}); "
                              "it was not loaded. Use another checkpoint or a copy of this one.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": the error says it
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle payload, not a torch file at all…
        text = str(exc).strip()
        reason = text.splitlines()[0][:300] if text else type(exc).__name__
        if "Unsupported global" in text or "Unsupported operand" in text:
            reason = "it contains pickled Python objects, which pipeforge never loads (no code was run)"
        elif "weights_only" in text:
            reason = "not a PyTorch weights file, or one holding what pipeforge never loads (no code was run)"
        raise CheckpointError(f"{path}: not a readable {what}: {reason}") from None


def _archive_damage(path: Path) -> str | None:
    """What is wrong with the zip archive torch.save wrote at `path`, or None when every record
    matches its CRC-32. A file that is no zip archive (torch's legacy format, or no torch file at
    all) is left to torch.load to judge.

    Reads the whole file once more, at about 1.7 GB/s: ~30 ms for a ResNet-18's 47 MB, ~55 ms
    for its 94 MB checkpoint with optimizer state (torch.load itself: ~60 and ~70 ms)."""
    try:
        if not zipfile.is_zipfile(path):
            return None
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except Exception as exc:  # a damaged directory, an unsupported record, an unreadable file…
        text = " ".join(str(exc).split())[:200]
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return None if bad is None else f"the record {bad!r} does not match its checksum"


def load(path: Path) -> Checkpoint:
    """Read and check a pipeforge checkpoint; raise `CheckpointError` for anything else."""
    return Checkpoint.from_payload(read_torch_file(path, "pipeforge checkpoint"), path)


def step_files(directory: Path) -> list[Path]:
    """Step checkpoints in `directory`, oldest first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := STEP_FILE.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_valid(directory: Path) -> tuple[Path, Checkpoint] | None:
    """The newest step checkpoint that loads, skipping damaged ones; None if there is none."""
    for path in reversed(step_files(directory)):
        try:
            return path, load(path)
        except CheckpointError:
            continue
    return None


def resumable(directory: Path) -> tuple[Path, Checkpoint] | None:
    """The newest step checkpoint, to resume from; None when there is none yet.

    A step checkpoint that cannot be read is never skipped: training on would sooner or later
    write over it. Raises `CheckpointError` naming every such file.
    """
    refused: list[str] = []
    found = None
    for path in reversed(step_files(directory)):
        try:
            found = path, load(path)
            break
        except CheckpointError as exc:
            refused.append(str(exc))
    if refused:
        older = f"resume from {found[0].name}" if found else "start the run over"
        shown = "\n".join(f"  - {line[:300]}" for line in refused[:5])
        more = f"\n  … and {len(refused) - 5} more" if len(refused) > 5 else ""
        raise CheckpointError(
            f"cannot resume {directory.parent}: {len(refused)} checkpoint(s) newer than any readable one "
            f"cannot be read; nothing was changed:\n{shown}{more}\n"
            f"Move them out of {directory} to {older}."
        )
    return found


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
