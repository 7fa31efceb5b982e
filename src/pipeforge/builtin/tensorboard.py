"""The TensorBoard callback: a plugin object on the public lifecycle hooks.

Writes the training loss every `log_every_n_steps` steps under `batch_tag` (the popularity seed's
`Loss/train`) and every epoch metric as `Loss/<split>` / `Accuracy/<split>` / `<metric>/<split>`
with the epoch as the step, into `<run dir>/tensorboard/` (the per-epoch training loss is
`Loss/train_epoch`, so it does not mix with the per-step curve; the learning rate is `LearningRate`).

Every logged step keeps its own step number and wall time, but the losses are read from the
device and written together: at each epoch end, and within long epochs every `flush_every_s`
seconds or `MAX_PENDING` logged steps. The training step therefore never waits for the device
or for a writer thread (with `torch.utils.tensorboard`'s `add_scalar` per step, both cost more
than a small model's step). The files are ordinary event files in TensorBoard's record format.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from pathlib import Path
from typing import Any

from pipeforge.builtin import params as p
from pipeforge.context import BuildContext, RunState
from pipeforge.hookspecs import hookimpl

_file_numbers = itertools.count()  # two writers of one process in the same second get two files
MAX_PENDING = 1000  # losses held on the device before they are written, whatever the time


class EventFile:
    """One TensorBoard event file, written synchronously by whoever calls it."""

    def __init__(self, directory: Path, purge_step: int | None) -> None:
        # Imported here: only runs with this callback need protobuf and tensorboard.
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.record_writer import RecordWriter

        self._event, self._summary = Event, Summary
        directory.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{next(_file_numbers)}"
        self._records = RecordWriter(open(directory / name, "wb"))
        self._write(Event(wall_time=time.time(), file_version="brain.Event:2"))
        if purge_step is not None:
            # TensorBoard hides the events at or after `purge_step` that earlier files hold:
            # a resumed run supersedes what was logged after its checkpoint.
            self._write(Event(wall_time=time.time(), step=purge_step, session_log=SessionLog(status=SessionLog.START)))
        self.flush()

    def scalar(self, tag: str, value: float, step: int, wall_time: float) -> None:
        summary = self._summary(value=[self._summary.Value(tag=tag, simple_value=value)])
        self._write(self._event(wall_time=wall_time, step=step, summary=summary))

    def _write(self, event: Any) -> None:
        self._records.write(event.SerializeToString())

    def flush(self) -> None:
        self._records.flush()

    def close(self) -> None:
        self._records.close()


class TensorBoardLogger:
    def __init__(self, params: p.TensorBoardParams) -> None:
        self.params = params
        self._events: EventFile | None = None
        self.directory: Path | None = None
        self.purge_step: int | None = None
        self.pending: list[tuple[Any, int, float]] = []  # (loss tensor on the device, step, wall time)
        self.written_at = 0.0

    @property
    def events(self) -> EventFile:
        """The event file, made with the first value: a run that fails before it logs anything
        leaves no log behind (and so no run dir kept for an empty log)."""
        if self._events is None:
            self._events = EventFile(self.directory, self.purge_step)
        return self._events

    @hookimpl
    def on_fit_start(self, state: RunState) -> None:
        self.directory = state.run_dir / "tensorboard"
        self.purge_step = state.global_step or None
        # The file is made with its first value, but TensorBoard's modules (~50 ms) load now,
        # before the loop, so the first epoch-end write does not stall training.
        import importlib

        for module in ("tensorboard.compat.proto.event_pb2", "tensorboard.compat.proto.summary_pb2",
                       "tensorboard.summary.writer.record_writer"):
            importlib.import_module(module)

        self.written_at = time.monotonic()

    @hookimpl
    def on_batch_end(self, state: RunState, loss: Any) -> None:
        if state.global_step % self.params.log_every_n_steps == 0:
            self.pending.append((loss, state.global_step - 1, time.time()))
            if len(self.pending) >= MAX_PENDING or time.monotonic() - self.written_at >= self.params.flush_every_s:
                self.write_pending()
                self.events.flush()

    @hookimpl
    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.write_pending()
        now = time.time()
        for key, value in metrics.items():
            if key != "epoch":
                self.events.scalar(epoch_tag(key, self.params.batch_tag), value, epoch - 1, now)
        self.events.flush()

    @hookimpl
    def on_fit_end(self) -> None:
        if self.directory is not None:
            self.write_pending()  # also after a failure: what was trained is logged
        if self._events is not None:
            self._events.close()
            self._events = None

    def write_pending(self) -> None:
        """Write the buffered losses: one device-to-host copy for all of them."""
        if self.pending:
            import torch

            values = torch.stack([loss for loss, _, _ in self.pending]).float().tolist()
            for value, (_, step, wall_time) in zip(values, self.pending):
                self.events.scalar(self.params.batch_tag, value, step, wall_time)
            self.pending.clear()
        self.written_at = time.monotonic()


def epoch_tag(key: str, batch_tag: str) -> str:
    """`val_accuracy` → `Accuracy/val`; `lr` → `LearningRate`; never the per-step tag."""
    if key == "lr":
        return "LearningRate"
    split, _, metric = key.partition("_")
    tag = f"{metric.capitalize()}/{split}"
    return f"{tag}_epoch" if tag == batch_tag else tag


def build(params: p.TensorBoardParams, context: BuildContext) -> TensorBoardLogger:
    return TensorBoardLogger(params)
