"""The `tm.*` metrics against the real torchmetrics: every registered metric gives under two
data-parallel processes (gloo, the engine's sharding and its `sum_fn`) what it gives on one
process over the same samples; and a run records them, with the confusion matrix table."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

import pipeforge

pytestmark = pytest.mark.slow  # torchmetrics takes seconds to import; two processes join a group

CLASSES = 6
SAMPLES = 203  # odd: the two shards differ in size, as they do in a run
# Every registered tm.* metric with its defaults, and the variants whose state differs.
VARIANTS = [
    {"name": "tm.f1", "key": "f1_micro", "average": "micro"},
    {"name": "tm.precision", "key": "precision_weighted", "average": "weighted", "top_k": 2},
    {"name": "tm.auroc", "key": "auroc_binned", "thresholds": 16},
    {"name": "tm.confusion_matrix", "key": "cm_true", "normalize": "true"},
    {"name": "tm.mse", "key": "rmse", "squared": False},
    {"name": "tm.r2", "key": "r2_adjusted", "adjusted": 2},
]


def specs() -> list[dict]:
    from pipeforge.plugins import discover

    names = sorted(name for name in discover().registry.names("metric") if name.startswith("tm."))
    return [{"name": name} for name in names] + VARIANTS


def data() -> dict[str, torch.Tensor]:
    """Class logits with ties (rounded) and class targets; regression outputs and targets."""
    g = torch.Generator().manual_seed(0)
    targets = torch.randint(0, CLASSES, (SAMPLES,), generator=g)
    logits = (torch.randn(SAMPLES, CLASSES, generator=g) + 1.5 * torch.nn.functional.one_hot(targets, CLASSES)).round(decimals=1)
    values = torch.randn(SAMPLES, generator=g)
    return {"logits": logits, "targets": targets, "outputs": (values + 0.5 * torch.randn(SAMPLES, generator=g)).unsqueeze(1),
            "values": values}


def score(rank: int, world: int) -> dict[str, float]:
    """Each spec's value over this rank's shard, combined across ranks as the engine does."""
    from functools import partial

    from torch.utils.data import TensorDataset

    from pipeforge import BuildContext, Datasets
    from pipeforge.distributed import Dist
    from pipeforge.evaluation import sum_on
    from pipeforge.loaders import make_batches
    from pipeforge.plugins import discover

    context = BuildContext(discover().registry, seed=0, device="cpu",
                           datasets=Datasets(splits={}, classes=[f"c{i}" for i in range(CLASSES)]))
    tensors = data()
    results = {}
    for spec in specs():
        metric = context.build("metric", dict(spec))
        regression = spec["name"] in ("tm.mae", "tm.mse", "tm.r2")
        split = TensorDataset(tensors["outputs"], tensors["values"]) if regression else \
            TensorDataset(tensors["logits"], tensors["targets"])
        batches = make_batches(split, batch_size=16, shuffle=False, drop_last=False, generator=None,
                               device=torch.device("cpu"), rank=rank, world=world, pad=False)
        metric.reset()
        for outputs, targets in batches.epoch():
            metric.update(outputs, targets)
        if world > 1:
            metric.all_reduce(partial(sum_on, Dist(rank, world), torch.device("cpu")))
        results[metric.name] = metric.compute()
    return results


def _rank(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        results = score(rank, 2)
    finally:
        dist.destroy_process_group()
    with open(os.path.join(out, f"rank{rank}.json"), "w") as handle:
        json.dump(results, handle)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_every_metric_gives_under_two_processes_what_it_gives_under_one(tmp_path):
    one = score(0, 1)
    assert len(one) == len(specs()) >= 15 and all(value == value for value in one.values()), one  # no NaN
    # Forked, not spawned: the ranks start with torch and torchmetrics already imported (seconds each).
    mp.start_processes(_rank, args=(free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork")
    for rank in (0, 1):
        two = json.loads((tmp_path / f"rank{rank}.json").read_text())
        # Sums of floats in another order differ in the last bits; counts and AUROC do not.
        assert two == pytest.approx(one, rel=1e-6, abs=1e-9), rank


def test_a_run_records_every_metric_and_the_confusion_table(tmp_path):
    recipe = {
        "run": {"name": "tm", "seed": 3},
        "dataset": {"name": "synthetic_classification", "n_train": 64, "n_val": 48, "features": 4, "classes": 3},
        "model": {"name": "mlp", "in_features": 4, "hidden": [8]},
        "optimizer": {"name": "sgd", "lr": 0.1},
        "trainer": {"epochs": 2, "batch_size": 16, "best_metric": "val_f1"},
        "metrics": [{"name": "accuracy"}, {"name": "tm.f1", "average": "micro"}, {"name": "tm.auroc"},
                    {"name": "tm.top_k_accuracy", "top_k": 1}, {"name": "tm.confusion_matrix"}],
        "callbacks": [],
    }
    result = pipeforge.run(recipe, run_dir=tmp_path / "run")
    last = result.history[-1]
    # Micro F1 and top-1 accuracy of single-label logits are the accuracy, counted another way.
    assert last["val_f1"] == pytest.approx(last["val_accuracy"]) == pytest.approx(last["val_top1_accuracy"])
    assert 0.5 <= last["val_auroc"] <= 1 and 0 <= last["val_balanced_accuracy"] <= 1
    table = [json.loads(line) for line in (result.run_dir / "confusion_matrix.jsonl").read_text().splitlines()]
    assert [(row["epoch"], row["split"]) for row in table] == [(1, "val"), (2, "val")]
    matrix = table[-1]["matrix"]
    assert table[-1]["classes"] == ["class_0", "class_1", "class_2"] and sum(map(sum, matrix)) == 48
    assert sum(matrix[i][i] for i in range(3)) / 48 == pytest.approx(last["val_accuracy"])
