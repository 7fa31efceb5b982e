"""Checkpointing a run while it trains: when to save, what is best, and writing in the background.

Every rank calls the Saver at the same steps (a save all-reduces the running loss); only rank 0
writes. The state is taken synchronously, then written to disk by one background thread, so
training goes on during the disk I/O. The file format itself belongs to `checkpoint.py`.
"""

from __future__ import annotations

import io
import queue
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from pipeforge.atomic import fsync_dir, link_atomic, write_atomic
from pipeforge.checkpoint import Checkpoint, EpochProgress, Position, capture_rng, step_files
from pipeforge.contract import check_state
from pipeforge.errors import TrainingError

if TYPE_CHECKING:
    from pipeforge.context import RunState
    from pipeforge.distributed import Dist


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

    @property
    def error(self) -> BaseException | None:
        """The failure of the last write, once it has finished, not yet re-raised by `wait`."""
        self._idle.wait()
        return self._error

    def close(self) -> None:
        """Let the pending write finish, then end the thread (errors are left to `wait`)."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None


class Saver:
    """Decides when a run is checkpointed, which epoch is best, and writes `model.pt`.

    Checkpoints: after an optimizer step once `checkpoint_every_s` seconds have passed since the
    last one (the caller says when that is `due`, agreed by every rank), every
    `checkpoint_every_steps` steps and every `checkpoint_every_epochs` epochs (if set), always
    after the last epoch, and on a stop request. `best.pt` is the epoch-end checkpoint with the
    best `best_metric`: a second name for that checkpoint when the epoch was checkpointed, else
    a copy of the state taken at that epoch's end, kept in memory and written just before the
    next checkpoint (so a checkpoint's `best` always describes the best.pt beside it). A state
    with non-finite weights or loss is never saved: the run stops instead, so the newest
    checkpoint is always good.

    A small state is serialised right away (cheaper than a copy that the writer thread would
    then pickle while competing with training for the interpreter); a large one is copied to
    memory, since copying costs a fifth of serialising.
    """

    INLINE_BYTES = 1 << 20  # states up to this size are serialised on the training thread

    def __init__(self, run_dir: Path, state: RunState, trainer: Any, eval_splits: list[str], dist: Dist,
                 callbacks: dict[str, Any] | None = None, labels: dict[str, str] | None = None) -> None:
        self.run_dir = run_dir
        self.directory = run_dir / "checkpoints"
        self.dist = dist
        self.state = state
        self.every_s = trainer.checkpoint_every_s
        self.every_steps = trainer.checkpoint_every_steps
        self.every_epochs = trainer.checkpoint_every_epochs
        self.last_saved = time.monotonic()
        self.pending_best: Checkpoint | None = None  # the best epoch's state, not yet on disk
        self.last_epoch = trainer.epochs
        self.keep = trainer.keep_checkpoints
        self.accumulate = trainer.accumulate_grad_batches
        self.best_metric = trainer.best_metric or (f"{eval_splits[0]}_loss" if eval_splits else "train_loss")
        self.minimise = self.best_metric.endswith("loss")
        self.best: float | None = None
        self.example: torch.Tensor | None = None  # one training sample, for export
        self.device = torch.device(state.device)
        self.writer = BackgroundWriter()
        self.recipe = state.recipe.model_dump(mode="json")
        self.callbacks = callbacks or {}  # key → callback whose `state_dict()` rides along
        self.labels = labels or {}

    def restore(self, saved: Checkpoint) -> None:
        """Continue from `saved`: its best value so far and its example input."""
        self.best = saved.best
        self.example = saved.example_input

    def due(self) -> bool:
        """Whether `checkpoint_every_s` has passed since the last checkpoint (this process's clock;
        under data parallelism rank 0's answer is shared with the others)."""
        return bool(self.every_s) and time.monotonic() - self.last_saved >= self.every_s

    def step_done(self, progress: EpochProgress, inputs: torch.Tensor, due: bool) -> None:
        """After every optimizer step: keep the first sample for export; save every N steps or
        when a checkpoint is `due` by time."""
        if self.example is None:
            self.example = inputs[:1].detach().to("cpu", copy=True)
        if due or (self.every_steps and self.state.global_step % self.every_steps == 0):
            self.save(progress)

    def epoch_done(self, progress: EpochProgress, epoch: int, last: bool = False, due: bool = False) -> None:
        """After an epoch's metrics are recorded: save if the cadence asks (always the last,
        and always when `last`: the run stops after this epoch); otherwise, if this epoch is the
        best so far, keep its state for best.pt."""
        if last or due or epoch == self.last_epoch or (self.every_epochs and epoch % self.every_epochs == 0):
            self.save(progress, epoch_end=True)
        elif self.dist.is_main and self._improves(self.state.history[-1].get(self.best_metric)):
            self.best = self.state.history[-1][self.best_metric]
            weights = cpu_copy(self.weights())  # later steps must not change it
            self.pending_best = self.checkpoint(progress, weights, True, 0.0, 0, None)

    def weights(self) -> dict[str, Any]:
        """The state dicts a checkpoint holds (live tensors, not copies)."""
        state = self.state
        weights = {
            "model": state.model.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict() if state.scheduler is not None else None,
        }
        if state.ema is not None:
            weights["ema"] = state.ema.state_dict()
        return weights

    def checkpoint(self, progress: EpochProgress, weights: dict[str, Any], epoch_end: bool, loss_total: float,
                   samples: int, grads: dict[str, torch.Tensor] | None) -> Checkpoint:
        """The run's state now as a `Checkpoint` (rank 0), with `weights` as given."""
        state = self.state
        return Checkpoint(
            recipe=self.recipe, **weights,
            epochs_done=state.epoch if epoch_end else state.epoch - 1,
            global_step=state.global_step,
            position=Position(progress.order_state.clone(), progress.batches_done,
                              torch.tensor(loss_total), int(samples), self.dist.world,
                              cpu_copy(progress.grad_norm_sum), progress.grad_norm_steps),
            rng=capture_rng(),
            history=[dict(row) for row in state.history],
            best=self.best,
            classes=state.datasets.classes,
            example_input=self.example,
            callbacks=self.callback_states(),
            scaler=state.scaler.state_dict() if state.scaler is not None else None,
            grads=grads,
        )

    def save(self, progress: EpochProgress, epoch_end: bool = False) -> None:
        """Checkpoint now (every rank calls this; a collective); raise `TrainingError` instead
        when the loss or the weights are not finite."""
        state = self.state
        self.last_saved = time.monotonic()
        loss_sum = progress.loss_sum if progress.loss_sum is not None else torch.zeros((), device=self.device)
        weights = self.weights()
        broken = ~torch.isfinite(loss_sum) | ~all_finite(weights["model"])
        # The epoch's running loss so far, summed over all ranks, and whether any rank's state
        # is broken: one collective, one host sync, every rank decides alike.
        totals = self.dist.sum(torch.stack([loss_sum.float(), torch.tensor(float(progress.samples), device=loss_sum.device),
                                            broken.float()]))
        loss_total, samples, broken_ranks = totals.tolist()
        if broken_ranks:
            # Never overwrite a good checkpoint with broken weights: stop here instead.
            raise self.not_finite("the weights or the training loss are not finite")
        grads = self.group_grads(progress) if not epoch_end else None  # a collective under DDP
        if not self.dist.is_main:
            return
        improved = epoch_end and self._improves(state.history[-1].get(self.best_metric))
        if improved:
            self.best = state.history[-1][self.best_metric]
        # The best epoch's state kept in memory goes to disk first (unless this one beats it).
        best, self.pending_best = (None if improved else self.pending_best), None
        inline = tensor_bytes(weights) <= self.INLINE_BYTES
        if not inline or self.device.type != "cpu":
            # A copy later steps cannot change; on the CPU, so the file loads on any machine.
            weights = cpu_copy(weights)
        saved = self.checkpoint(progress, weights, epoch_end, loss_total, samples, grads)
        path = self.directory / f"step-{state.global_step:08d}.pt"
        snapshot = serialize(saved.to_payload()) if inline else saved.to_payload()

        def write() -> None:
            if best is not None:
                write_atomic(self.directory / "best.pt", best.to_payload(), sync_dir=False)
            write_atomic(path, snapshot, sync_dir=False)
            if improved:
                link_atomic(path, self.directory / "best.pt")
            prune(self.directory, self.keep)
            fsync_dir(self.directory)  # the new names (and the pruned ones) are durable together

        self.writer.submit(write)

    def group_grads(self, progress: EpochProgress) -> dict[str, torch.Tensor] | None:
        """The gradients accumulated so far when a checkpoint falls inside an accumulation
        group (a stop between its batches), averaged over ranks as DDP's all-reduce would;
        None at a group's end."""
        if self.accumulate == 1 or progress.batches_done % self.accumulate == 0:
            return None
        grads = {}
        for name, param in self.state.model.named_parameters():
            if param.grad is not None:
                total = self.dist.sum(param.grad.detach().clone())
                grads[name] = (total / self.dist.world if self.dist.world > 1 else total).to("cpu")
        return grads

    def callback_states(self) -> dict[str, Any]:
        """Each callback's `state_dict()` (those that have one), checked to be loadable with
        `weights_only=True` and copied to the CPU."""
        states = {}
        for key, callback in self.callbacks.items():
            method = getattr(callback, "state_dict", None)
            if callable(method):
                value = method()
                check_state(value, self.labels.get(key, key))
                if value:
                    states[key] = cpu_copy(value)
        return states

    def write_model(self) -> None:
        """Write the final weights as `model.pt` (rank 0), atomically, while the last
        checkpoint may still be being written."""
        if self.dist.is_main:
            write_atomic(self.run_dir / "model.pt", self.state.model.state_dict())
            if self.state.ema is not None:  # the averaged weights, loadable like model.pt
                write_atomic(self.run_dir / "model_ema.pt", self.state.ema.module.state_dict())

    def not_finite(self, what: str) -> TrainingError:
        """The error that stops a run whose loss or weights stopped being finite."""
        state = self.state
        return TrainingError(
            f"{what} in epoch {state.epoch} (by step {state.global_step}); lower the learning rate "
            f"or check the data. {self.kept()} model.pt was not written."
        )

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
        `finish`, or when training already failed). A best epoch still in memory (a run that
        failed before its next checkpoint) is written as best.pt first."""
        best, self.pending_best = self.pending_best, None
        if best is not None and self.writer.error is None:
            self.writer.submit(lambda: write_atomic(self.directory / "best.pt", best.to_payload()))
        self.writer.close()


def prune(directory: Path, keep: int) -> None:
    """Remove all but the newest `keep` step checkpoints (pipeforge's own files only)."""
    for path in step_files(directory)[:-keep] if keep > 0 else []:
        path.unlink(missing_ok=True)


def all_finite(tensors: dict[str, Any]) -> torch.Tensor:
    """Whether every floating-point tensor in `tensors` is finite, as a tensor (no host sync)."""
    flags = [torch.isfinite(t).all() for t in tensors.values() if isinstance(t, torch.Tensor) and t.is_floating_point()]
    return torch.stack(flags).all() if flags else torch.tensor(True)


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
