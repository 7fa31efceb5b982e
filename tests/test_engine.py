"""The loop in-process: the in-memory fast path computes what the generic DataLoader path does."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, TensorDataset

from pipeforge.builtin.params import SyntheticClassificationParams
from pipeforge.builtin.synthetic import build_dataset as build_synthetic
from pipeforge.context import Datasets
from pipeforge.engine import fit
from pipeforge.loaders import LoaderBatches, TensorBatches, make_batches
from pipeforge.plugins import discover
from pipeforge.recipe import validate_recipe
from pipeforge.registry import Component, PluginInfo
from pipeforge.rundir import RunDir

torch.set_num_threads(1)


class ItemDataset(Dataset):
    """The same samples as a TensorDataset, served one `__getitem__` at a time."""

    def __init__(self, tensors: TensorDataset) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors)

    def __getitem__(self, index: int):
        return self.tensors[index]


def build_generic(params, context) -> Datasets:
    fast = build_synthetic(params, context)
    return Datasets({k: ItemDataset(v) for k, v in fast.splits.items()}, fast.classes)


def recipe_data(dataset: str) -> dict:
    return {
        "run": {"name": "paths", "seed": 3},
        "dataset": {"name": dataset, "n_train": 300, "n_val": 90, "features": 6, "classes": 3},
        "model": {"name": "mlp", "in_features": 6, "hidden": [16], "dropout": 0.1},
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "trainer": {"epochs": 3, "batch_size": 32, "drop_last": False},
        "callbacks": [],
    }


def test_batches_are_identical_on_both_paths():
    data = TensorDataset(torch.arange(50).float().unsqueeze(1), torch.arange(50))
    fast = make_batches(data, batch_size=8, shuffle=True, drop_last=False,
                        generator=torch.Generator().manual_seed(1), device=torch.device("cpu"))
    slow = make_batches(ItemDataset(data), batch_size=8, shuffle=True, drop_last=False,
                        generator=torch.Generator().manual_seed(1), device=torch.device("cpu"))
    assert isinstance(fast, TensorBatches) and isinstance(slow, LoaderBatches)
    assert len(fast) == len(slow) == 7
    for _ in range(2):  # a fresh permutation each epoch, the same on both paths
        pairs = list(zip(fast.epoch(), slow.epoch(), strict=True))
        for (fx, fy), (sx, sy) in pairs:
            assert torch.equal(fx, sx) and torch.equal(fy, sy)
    # Resuming part-way skips batches without reading them, on both paths.
    fast.order.generator.manual_seed(5)
    slow.order.generator.manual_seed(5)
    assert [y.tolist() for _, y in fast.epoch(skip=5)] == [y.tolist() for _, y in slow.epoch(skip=5)]


def test_fast_path_gives_the_generic_paths_metrics(tmp_path):
    plugins = discover()
    owner = PluginInfo("test", "tests", "0", "tests")
    plugins.registry.add(Component("dataset", "test.generic", SyntheticClassificationParams, build_generic), owner)
    histories = []
    for name in ("synthetic_classification", "test.generic"):
        recipe = validate_recipe(recipe_data(name), plugins.registry)
        state = fit(recipe, plugins, RunDir.claim(tmp_path / name, "paths"))
        histories.append(state.history)
    fast, generic = histories
    assert [r["epoch"] for r in fast] == [1, 2, 3]
    for a, b in zip(fast, generic, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert abs(a[key] - b[key]) <= 1e-6 * max(1.0, abs(a[key])), (key, a[key], b[key])
    assert fast[-1]["train_loss"] < fast[0]["train_loss"]


def test_auto_threads_follows_the_measured_policy():
    from pipeforge.setup import auto_threads

    assert auto_threads(2, 0.0, None) == 1  # 2 CPUs: one thread (benchmarks/threads.py)
    assert auto_threads(1, 0.0, None) == 1
    assert auto_threads(16, 1.0, None) == 8  # idle, many CPUs: one per CPU, at most 8
    assert auto_threads(4, 0.5, None) == 4
    assert auto_threads(4, 2.0, None) == 1  # half the CPUs busy elsewhere
    assert auto_threads(16, 0.0, "3") is None  # an explicit OMP_NUM_THREADS is kept
