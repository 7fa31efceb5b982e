"""The epoch checkpoint is the state at the moment it was taken, whichever way it is written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from conftest import run_in_process
from pipeforge import checkpoint
from pipeforge.checkpoint import EpochProgress
from pipeforge.context import Datasets, RunState
from pipeforge.distributed import Dist
from pipeforge.saver import Saver
from pipeforge.plugins import discover
from pipeforge.recipe import validate_recipe

torch.set_num_threads(1)

RECIPE = {
    "run": {"name": "snapshot", "seed": 0},
    "dataset": {"name": "synthetic_classification"},
    "model": {"name": "mlp", "in_features": 4, "hidden": [8]},
    "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
    "trainer": {"epochs": 2},
    "callbacks": [],
}


@pytest.mark.parametrize("inline_bytes", [Saver.INLINE_BYTES, 0], ids=["serialised-at-once", "copied-then-serialised"])
def test_training_on_does_not_change_the_checkpoint_being_written(tmp_path, monkeypatch, inline_bytes):
    monkeypatch.setattr(Saver, "INLINE_BYTES", inline_bytes)
    recipe = validate_recipe(RECIPE, discover().registry)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(3, 4)).sum().backward()
    optimizer.step()  # momentum buffers exist
    data = Datasets({"train": TensorDataset(torch.randn(6, 4), torch.zeros(6, dtype=torch.long))}, ["a", "b"])
    state = RunState(recipe, tmp_path, "cpu", model, optimizer, None, data, epoch=1, global_step=7,
                     history=[{"epoch": 1, "train_loss": 0.5}])
    saver = Saver(tmp_path, state, recipe.trainer, [], Dist())
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    momentum = [optimizer.state[p]["momentum_buffer"].clone() for p in model.parameters()]
    try:
        saver.save(EpochProgress(order_state=torch.Generator().get_state(), batches_done=2,
                                 loss_sum=torch.tensor(3.0), samples=6), epoch_end=True)
        for _ in range(3):  # training goes on while the writer thread works
            optimizer.zero_grad()
            model(torch.randn(3, 4)).sum().backward()
            optimizer.step()
        saver.finish()
    finally:
        saver.close()
    path = tmp_path / "checkpoints" / "step-00000007.pt"
    saved = checkpoint.load(path)
    assert saved.model.keys() == weights.keys()
    assert all(torch.equal(saved.model[k], weights[k]) for k in weights)
    assert not torch.equal(saved.model["0.weight"], model.state_dict()["0.weight"])
    saved_momentum = [saved.optimizer["state"][i]["momentum_buffer"] for i in range(len(momentum))]
    assert all(torch.equal(a, b) for a, b in zip(saved_momentum, momentum))
    assert saved.epochs_done == 1 and saved.global_step == 7
    assert saved.position.loss_sum.item() == 3.0 and saved.position.samples == 6
    assert all(t.device.type == "cpu" for t in saved.model.values())
    # Without evaluated splits best.pt follows train_loss; it is the same file, not a copy.
    assert (tmp_path / "checkpoints" / "best.pt").samefile(path)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best.pt", path.name]


FORMAT1_RUN = Path(__file__).parent / "data" / "format1-run"


def test_a_checkpoint_written_by_format_1_resumes_to_the_same_weights(tmp_path):
    """tests/data/format1-run holds a mid-epoch checkpoint (step 8 of 18) written by pipeforge
    0.1.0, checkpoint format 1, and the final weights and metrics of the same run left
    uninterrupted. A later pipeforge must resume that checkpoint and end bitwise there."""
    run_dir = tmp_path / "run"
    shutil.copytree(FORMAT1_RUN / "checkpoints", run_dir / "checkpoints")
    shutil.copy(FORMAT1_RUN / "recipe.toml", run_dir / "recipe.toml")
    resumed = run_in_process("run", "--resume", run_dir, "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    mine = torch.load(run_dir / "model.pt", weights_only=True)
    expected = torch.load(FORMAT1_RUN / "expected-model.pt", weights_only=True)
    assert mine.keys() == expected.keys()
    assert all(torch.equal(mine[key], expected[key]) for key in expected)
    assert (run_dir / "metrics.jsonl").read_text() == (FORMAT1_RUN / "expected-metrics.jsonl").read_text()
