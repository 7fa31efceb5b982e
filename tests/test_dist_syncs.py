"""Data-parallel training asks the other ranks nothing it must wait for at each step: the
per-step questions (stop? checkpoint due?) go out as one asynchronous CPU all-reduce whose
answer is read a step later; blocking collectives happen per epoch, not per step."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

pytestmark = pytest.mark.slow  # two processes that import torch and join a process group

RECIPE = {
    "run": {"name": "syncs", "seed": 3},
    "dataset": {"name": "synthetic_classification", "n_train": 256, "n_val": 64, "features": 4, "classes": 2},
    "model": {"name": "mlp", "in_features": 4, "hidden": [8]},
    "optimizer": {"name": "sgd", "lr": 0.1},
    "trainer": {"epochs": 2, "batch_size": 16, "num_workers": 0},
}
STEPS_PER_EPOCH = 256 // 2 // 16  # each rank trains on half the samples


def _train_counting(rank: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    import torch.distributed as dist

    from pipeforge import hookimpl, run
    from pipeforge.context import StopRequest

    calls: list[tuple[bool, str]] = []
    items = [0]
    real_all_reduce, real_item = dist.all_reduce, torch.Tensor.item

    def all_reduce(tensor, *args, **kwargs):
        calls.append((bool(kwargs.get("async_op")), tensor.device.type))
        return real_all_reduce(tensor, *args, **kwargs)

    def item(self):
        items[0] += 1
        return real_item(self)

    marks: list[tuple[int, int, int]] = []  # (epoch, collectives so far, .item() calls so far)

    class Marker:
        @hookimpl
        def on_batch_end(self, state):
            marks.append((state.epoch, len(calls), items[0]))

    dist.all_reduce, torch.Tensor.item = all_reduce, item
    try:
        # A stop request to poll, as `pipeforge run` always passes.
        run(RECIPE, run_dir=Path(out) / "run", callbacks=[Marker()], stop=StopRequest())
    finally:
        dist.all_reduce, torch.Tensor.item = real_all_reduce, real_item
    Path(out, f"rank{rank}.json").write_text(json.dumps({"calls": calls, "marks": marks}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_blocking_collective_or_item_between_steps(tmp_path):
    mp.spawn(_train_counting, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"rank{rank}.json").read_text())
        calls, marks = seen["calls"], seen["marks"]
        assert len(marks) == 2 * STEPS_PER_EPOCH
        exchanges = 0
        for (epoch, before, items_before), (next_epoch, after, items_after) in zip(marks, marks[1:]):
            if epoch != next_epoch:
                continue  # an epoch's end lies between: evaluation and the epoch's loss are blocking
            between = calls[before:after]
            # At most one all-reduce between two steps: the stop/checkpoint questions, in the
            # background on the CPU (one every few steps when steps are short).
            assert between in ([], [[True, "cpu"]]), f"rank {rank}, epoch {epoch}: {between}"
            exchanges += len(between)
            assert items_after == items_before, f"rank {rank}: .item() between steps of epoch {epoch}"
        assert exchanges >= 1  # the questions are asked within epochs, not only at their ends
