"""Checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is a dict of tensors and plain values (no pickled objects), written atomically —
temp file, flush + fsync, rename, fsync the directory — so a reader never sees half of one and a
crash during a write leaves the previous checkpoint usable. Loading always uses
`torch.load(weights_only=True)`: a file carrying a pickle payload is refused and runs no code.

Layout in the run dir: `checkpoints/step-<global step>.pt` (the last `keep` of them) and
`checkpoints/best.pt` (best epoch by the chosen metric).
"""

from __future__ import annotations

import io
import os
import queue
import random
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from pipeforge import __version__
from pipeforge.errors import CheckpointError, TrainingError

if TYPE_CHECKING:
    from pipeforge.context import RunState
    from pipeforge.distributed import Dist
    from pipeforge.engine import EpochProgress

FORMAT = "pipeforge-checkpoint"
FORMAT_VERSION = 1
STEP_FILE = re.compile(r"^step-(\d+)\.pt$")


def write_atomic(path: Path, payload: Any, sync_dir: bool = True) -> None:
    """`torch.save` to `path` so that `path` is always either the old or the complete new file.

    `payload` may also be what `serialize` returned: its bytes are written as they are. With
    `sync_dir=False` the caller makes the rename durable (one directory fsync for several files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        if isinstance(payload, memoryview):
            f.write(payload)
        else:
            torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    if sync_dir:
        fsync_dir(path.parent)  # make the rename itself durable


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


def serialize(payload: Any) -> memoryview:
    """The bytes `torch.save` would write for `payload`, taken now."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getbuffer()


def tensor_bytes(value: Any) -> int:
    """How many bytes the tensors in nested dicts/lists hold."""
    if isinstance(value, torch.Tensor):
        return value.nbytes
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(v) for v in value)
    return 0


def cpu_copy(value: Any) -> Any:
    """A copy of nested dicts/lists of tensors, on the CPU, that later training cannot change."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: cpu_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(cpu_copy(v) for v in value)
    return value


# ------------------------------------------------------------------------------ writing during a run


class BackgroundWriter:
    """Writes checkpoints one at a time on one thread, so training goes on during the disk I/O.

    The thread starts with the first write and lives until `close` (starting a thread per
    write made the training thread wait for the new thread to get going). It is not a daemon:
    a write in progress completes even if training fails.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, write: Callable[[], None]) -> None:
        """Queue `write` after the pending one has finished (one snapshot in memory at most)."""
        self.wait()
        self._idle.clear()
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="pipeforge-checkpoint")
            self._thread.start()
        self._jobs.put(write)

    def _loop(self) -> None:
        while (write := self._jobs.get()) is not None:
            try:
                write()
            except BaseException as exc:  # handed to the training thread by wait()
                self._error = exc
            finally:
                self._idle.set()

    def wait(self) -> None:
        """Block until the pending write is on disk; re-raise its error, if any."""
        self._idle.wait()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def close(self) -> None:
        """Let the pending write finish, then end the thread (errors are left to `wait`)."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None


class Saver:
    """Checkpoints a run: at every epoch end, every N steps if asked, and best.pt.

    Every rank calls `save` at the same steps (it all-reduces the running loss); only rank 0
    writes. The state is taken synchronously, then written to disk in the background. A small
    state is serialised right away (cheaper than a copy that the writer thread would then
    pickle while competing with training for the interpreter); a large one is copied to
    memory, since copying costs a fifth of serialising.
    """

    INLINE_BYTES = 1 << 20  # states up to this size are serialised on the training thread

    def __init__(self, run_dir: Path, state: RunState, trainer: Any, eval_splits: list[str], dist: Dist) -> None:
        self.directory = run_dir / "checkpoints"
        self.dist = dist
        self.state = state
        self.every = trainer.checkpoint_every_steps
        self.keep = trainer.keep_checkpoints
        self.best_metric = trainer.best_metric or (f"{eval_splits[0]}_loss" if eval_splits else "train_loss")
        self.minimise = self.best_metric.endswith("loss")
        self.best: float | None = None
        self.example: torch.Tensor | None = None  # one training sample, for export
        self.device = torch.device(state.device)
        self.writer = BackgroundWriter()
        self.recipe = state.recipe.model_dump(mode="json")

    def save(self, progress: EpochProgress, epoch_end: bool = False) -> None:
        state = self.state
        loss_sum = progress.loss_sum if progress.loss_sum is not None else torch.zeros((), device=self.device)
        if not torch.isfinite(loss_sum):
            # Never overwrite a good checkpoint with broken weights: stop here instead.
            raise TrainingError(
                f"the training loss is not finite in epoch {state.epoch} (by step {state.global_step}); "
                f"lower the learning rate or check the data. {self.kept()}"
            )
        # The epoch's running loss so far, summed over all ranks (a collective: every rank is here).
        partial = self.dist.sum(torch.stack([loss_sum.float(), torch.tensor(float(progress.samples), device=loss_sum.device)]))
        if not self.dist.is_main:
            return
        improved = epoch_end and self._improves(state.history[-1].get(self.best_metric))
        if improved:
            self.best = state.history[-1][self.best_metric]
        weights = {
            "model": state.model.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict() if state.scheduler is not None else None,
        }
        inline = tensor_bytes(weights) <= self.INLINE_BYTES
        if not inline or self.device.type != "cpu":
            # A copy later steps cannot change; on the CPU, so the file loads on any machine.
            weights = cpu_copy(weights)
        payload = {
            **header(),
            "recipe": self.recipe,
            **weights,
            "epochs_done": state.epoch if epoch_end else state.epoch - 1,
            "global_step": state.global_step,
            "progress": {
                "order_state": progress.order_state.clone(),
                "batches_done": progress.batches_done,
                "loss_sum": partial[0].detach().cpu(),
                "samples": int(partial[1].item()),
                "world_size": self.dist.world,
            },
            "rng": capture_rng(),
            "history": [dict(row) for row in state.history],
            "best": self.best,
            "classes": state.datasets.classes,
            "example_input": self.example,
        }
        path = self.directory / f"step-{state.global_step:08d}.pt"
        snapshot = serialize(payload) if inline else payload

        def write() -> None:
            write_atomic(path, snapshot, sync_dir=False)
            if improved:
                link_atomic(path, self.directory / "best.pt")
            prune(self.directory, self.keep)
            fsync_dir(self.directory)  # the new names (and the pruned ones) are durable together

        self.writer.submit(write)

    def kept(self) -> str:
        """Says which checkpoint a failed run leaves to resume from (the newest on disk, once
        the pending write has finished; training is over when this is asked)."""
        self.writer.close()
        files = step_files(self.directory)
        if not files:
            return "No checkpoint had been written yet."
        return f"The last good checkpoint, {files[-1].name}, is kept in {self.directory}."

    def _improves(self, value: float | None) -> bool:
        if value is None:
            return False
        return self.best is None or (value < self.best if self.minimise else value > self.best)

    def finish(self) -> None:
        """Wait for the pending checkpoint; raise if writing it failed."""
        self.writer.wait()

    def close(self) -> None:
        """Wait for the pending checkpoint and end the writer thread, without raising (after
        `finish`, or when training already failed)."""
        self.writer.close()

