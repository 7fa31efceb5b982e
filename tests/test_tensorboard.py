"""The TensorBoard callback: buffered per-step losses come out as TensorBoard reads them."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from pipeforge.builtin import params as p
from pipeforge.builtin.tensorboard import MAX_PENDING, TensorBoardLogger


def read_scalars(directory: Path) -> dict[str, list]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(directory), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: accumulator.Scalars(tag) for tag in accumulator.Tags()["scalars"]}


def train(logger: TensorBoardLogger, state: SimpleNamespace, losses: list[float]) -> None:
    for value in losses:
        state.global_step += 1
        logger.on_batch_end(state=state, loss=torch.tensor(value))


def test_every_step_keeps_its_value_step_and_time(tmp_path):
    state = SimpleNamespace(run_dir=tmp_path, global_step=0)
    logger = TensorBoardLogger(p.TensorBoardParams())
    logger.on_fit_start(state=state)
    losses = [1.0 / (i + 1) for i in range(7)]
    train(logger, state, losses)
    logger.on_epoch_end(epoch=1, metrics={"epoch": 1, "train_loss": 0.5, "val_accuracy": 0.75, "lr": 0.1})
    scalars = read_scalars(tmp_path / "tensorboard")  # readable before the run ends
    assert [e.step for e in scalars["Loss/train"]] == list(range(7))
    assert [e.value for e in scalars["Loss/train"]] == [pytest.approx(v, rel=1e-7) for v in losses]
    times = [e.wall_time for e in scalars["Loss/train"]]
    assert times == sorted(times) and times[0] > 1.6e9
    assert [(e.step, e.value) for e in scalars["Accuracy/val"]] == [(0, 0.75)]
    assert set(scalars) == {"Loss/train", "Loss/train_epoch", "Accuracy/val", "LearningRate"}
    logger.on_fit_end()


def test_long_epochs_are_written_before_the_epoch_ends(tmp_path):
    state = SimpleNamespace(run_dir=tmp_path, global_step=0)
    logger = TensorBoardLogger(p.TensorBoardParams(log_every_n_steps=2))
    logger.on_fit_start(state=state)
    train(logger, state, [0.5] * (2 * MAX_PENDING + 1))  # a count limit, whatever the time
    assert len(read_scalars(tmp_path / "tensorboard")["Loss/train"]) == MAX_PENDING
    timed = TensorBoardLogger(p.TensorBoardParams(flush_every_s=1e-9))  # …and a time limit
    timed_state = SimpleNamespace(run_dir=tmp_path / "timed", global_step=0)
    timed.on_fit_start(state=timed_state)
    train(timed, timed_state, [0.25, 0.5])
    assert [e.value for e in read_scalars(tmp_path / "timed" / "tensorboard")["Loss/train"]] == [0.25, 0.5]
    # A run that fails mid-epoch still logs what it trained (on_fit_end runs in a finally).
    logger.on_fit_end()
    assert [e.step for e in read_scalars(tmp_path / "tensorboard")["Loss/train"]] == list(range(1, 2 * MAX_PENDING, 2))


def test_a_resumed_run_supersedes_the_steps_after_its_checkpoint(tmp_path):
    first = TensorBoardLogger(p.TensorBoardParams())
    state = SimpleNamespace(run_dir=tmp_path, global_step=0)
    first.on_fit_start(state=state)
    train(first, state, [9.0] * 10)  # steps 0-9, then the process dies
    first.on_fit_end()
    resumed = TensorBoardLogger(p.TensorBoardParams())
    state = SimpleNamespace(run_dir=tmp_path, global_step=4)  # the checkpoint was at step 4
    resumed.on_fit_start(state=state)
    train(resumed, state, [1.0] * 6)
    resumed.on_fit_end()
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 2
    events = read_scalars(tmp_path / "tensorboard")["Loss/train"]
    assert [(e.step, e.value) for e in events] == [(s, 9.0) for s in range(4)] + [(s, 1.0) for s in range(4, 10)]
