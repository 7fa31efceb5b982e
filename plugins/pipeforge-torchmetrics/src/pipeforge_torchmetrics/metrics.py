"""The `tm.*` metrics: torchmetrics metrics behind pipeforge's `Metric` contract.

Imported only when a run builds one (torchmetrics takes seconds to import). Each metric keeps
torchmetrics' own state on the run's device and never syncs by itself (`sync_on_compute=False`):
under data parallelism the engine calls `all_reduce(sum_fn)` once per split, and that hands
torchmetrics' own `sync()` a gather made of `sum_fn` (each process adds its state into its own
slot of a zero buffer), after which torchmetrics reduces every state as it always does — sums
summed, lists of scores concatenated. So 2 processes compute what 1 does on the same samples.

`tm.confusion_matrix` records the balanced accuracy (the mean recall over the classes that
occur) and writes each evaluated split's matrix to `<run dir>/confusion_matrix.jsonl` at each
epoch end: `{"epoch", "split", "metric", "normalize", "classes", "matrix"}` (rank 0 only). On
resume the file is cut back to the epochs the checkpoint holds, as metrics.jsonl is.
"""

from __future__ import annotations

import json
import os
import weakref
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
from torchmetrics import classification as tmc
from torchmetrics import regression as tmr

from pipeforge import BuildContext, Metric, PluginError
from pipeforge_torchmetrics import plugin as p

TABLE = "confusion_matrix.jsonl"
MAX_DIMS = 8


class TorchMetric(Metric):
    """One torchmetrics metric; `name` is its key suffix (`val_f1`)."""

    def __init__(self, name: str, component: str, metric: Any, regression: bool = False) -> None:
        self.name = name
        self.component = component
        self.metric = metric
        self.regression = regression

    def reset(self) -> None:
        self.metric.reset()

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        if self.metric.device != outputs.device:
            self.metric.to(outputs.device)
        outputs = outputs.detach().float()  # bfloat16 under precision = "bf16"
        if self.regression:
            if outputs.ndim == targets.ndim + 1 and outputs.shape[-1] == 1:
                outputs = outputs.squeeze(-1)
            targets = targets.float()
        try:
            self.metric.update(outputs, targets)
        except (ValueError, RuntimeError) as exc:
            shape = f"outputs {tuple(outputs.shape)} {outputs.dtype}, targets {tuple(targets.shape)} {targets.dtype}"
            raise PluginError(f"metric '{self.component}' cannot score this model's outputs ({shape}): "
                              f"{str(exc).strip().splitlines()[0]}") from None

    def all_reduce(self, sum_fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.metric.sync(dist_sync_fn=partial(gather_by_sum, sum_fn), distributed_available=lambda: True)

    def compute(self) -> float:
        return float(self.metric.compute())


def gather_by_sum(sum_fn: Callable[[torch.Tensor], torch.Tensor], tensor: torch.Tensor,
                  group: Any = None) -> list[torch.Tensor]:
    """Every process's `tensor` (its shape may differ between processes, e.g. the scores of an
    uneven shard), in rank order, made of sums alone: first the shapes, then the values, each
    process writing into its own slot of a zero buffer. Exact: x + 0 is x."""
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    if tensor.ndim > MAX_DIMS:
        raise PluginError(f"a torchmetrics state of {tensor.ndim} dimensions cannot be gathered (at most {MAX_DIMS})")
    shapes = torch.zeros(world, MAX_DIMS + 1, dtype=torch.float64)
    shapes[rank, 0] = tensor.ndim
    shapes[rank, 1:tensor.ndim + 1] = torch.tensor(tensor.shape, dtype=torch.float64)
    shapes = sum_fn(shapes).long().tolist()
    sizes = [tuple(row[1:row[0] + 1]) for row in shapes]
    counts = [int(torch.tensor(size, dtype=torch.int64).prod()) if size else 1 for size in sizes]
    dtype = torch.uint8 if tensor.dtype == torch.bool else tensor.dtype
    buffer = torch.zeros(sum(counts), dtype=dtype, device=tensor.device)
    start = sum(counts[:rank])
    buffer[start:start + counts[rank]] = tensor.detach().reshape(-1).to(dtype)
    buffer = sum_fn(buffer)
    parts, offset = [], 0
    for size, count in zip(sizes, counts):
        parts.append(buffer[offset:offset + count].reshape(size).to(tensor.dtype))
        offset += count
    return parts


class ConfusionMatrix(TorchMetric):
    """Counts per (true, predicted) class; `compute()` gives the balanced accuracy and keeps the
    matrix for the table."""

    def __init__(self, name: str, metric: Any, normalize: str, classes: list[str]) -> None:
        super().__init__(name, "tm.confusion_matrix", metric)
        self.normalize, self.classes = normalize, classes
        self.matrix: list[list[float]] | None = None  # the last split's, for the table
        self.pending: dict[str, list[list[float]]] = {}  # split → matrix, until the epoch ends

    def compute(self) -> float:
        counts = self.metric.compute().double().cpu()
        totals = {"true": counts.sum(dim=1, keepdim=True), "pred": counts.sum(dim=0, keepdim=True),
                  "all": counts.sum()}.get(self.normalize)
        cells = counts if totals is None else counts / totals.clamp(min=1)
        self.matrix = [[float(v) if totals is not None else int(v) for v in row] for row in cells.tolist()]
        support = counts.sum(dim=1)
        seen = support > 0
        if not seen.any():
            return float("nan")
        return float((counts.diagonal()[seen] / support[seen]).mean())


# ---------------------------------------------------------------- builders


def _classes(context: BuildContext, component: str) -> int:
    classes = context.datasets.num_classes if context.datasets is not None else None
    if not classes:
        raise PluginError(f"metric '{component}' scores class logits, but the dataset names no classes")
    return classes


def _classification(cls: type, component: str, params: p.ClassificationParams, context: BuildContext) -> TorchMetric:
    metric = cls(num_classes=_classes(context, component), average=params.average, top_k=params.top_k,
                 ignore_index=params.ignore_index, sync_on_compute=False)
    return TorchMetric(params.metric_name, component, metric)


def build_f1(params: p.F1Params, context: BuildContext) -> TorchMetric:
    return _classification(tmc.MulticlassF1Score, "tm.f1", params, context)


def build_precision(params: p.PrecisionParams, context: BuildContext) -> TorchMetric:
    return _classification(tmc.MulticlassPrecision, "tm.precision", params, context)


def build_recall(params: p.RecallParams, context: BuildContext) -> TorchMetric:
    return _classification(tmc.MulticlassRecall, "tm.recall", params, context)


def build_auroc(params: p.AUROCParams, context: BuildContext) -> TorchMetric:
    metric = tmc.MulticlassAUROC(num_classes=_classes(context, "tm.auroc"), average=params.average,
                                 thresholds=params.thresholds, sync_on_compute=False)
    return TorchMetric(params.metric_name, "tm.auroc", metric)


def build_top_k_accuracy(params: p.TopKParams, context: BuildContext) -> TorchMetric:
    metric = tmc.MulticlassAccuracy(num_classes=_classes(context, "tm.top_k_accuracy"), top_k=params.top_k,
                                    average="micro", sync_on_compute=False)
    return TorchMetric(params.metric_name, "tm.top_k_accuracy", metric)


def build_confusion_matrix(params: p.ConfusionMatrixParams, context: BuildContext) -> ConfusionMatrix:
    classes = _classes(context, "tm.confusion_matrix")
    metric = ConfusionMatrix(params.metric_name, tmc.MulticlassConfusionMatrix(num_classes=classes, sync_on_compute=False),
                             params.normalize, list(context.datasets.classes))
    if context.run_dir is not None:
        _table_of(Path(context.run_dir), id(context)).add(metric)
    return metric


def build_mae(params: p.MAEParams, context: BuildContext) -> TorchMetric:
    return TorchMetric(params.metric_name, "tm.mae", tmr.MeanAbsoluteError(sync_on_compute=False), regression=True)


def build_mse(params: p.MSEParams, context: BuildContext) -> TorchMetric:
    metric = tmr.MeanSquaredError(squared=params.squared, sync_on_compute=False)
    return TorchMetric(params.metric_name, "tm.mse", metric, regression=True)


def build_r2(params: p.R2Params, context: BuildContext) -> TorchMetric:
    return TorchMetric(params.metric_name, "tm.r2", tmr.R2Score(adjusted=params.adjusted, sync_on_compute=False),
                       regression=True)


# ---------------------------------------------------------------- the confusion matrix table

# run dir → (the build it came from, its confusion matrices): a later build of the same run dir
# (a resume in the same process) replaces the earlier one.
_TABLES: dict[str, tuple[int, weakref.WeakSet]] = {}


def _table_of(run_dir: Path, build: int) -> weakref.WeakSet:
    key = str(run_dir.resolve())
    if key not in _TABLES or _TABLES[key][0] != build:
        _TABLES[key] = (build, weakref.WeakSet())
    return _TABLES[key][1]


def _matrices(state: Any) -> list[ConfusionMatrix]:
    """This run's confusion matrices, in the process that writes the run dir only."""
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return []
    entry = _TABLES.get(str(Path(state.run_dir).resolve()))
    return sorted(entry[1], key=lambda m: m.name) if entry else []


def tables_fit_start(state: Any) -> None:
    """Keep only the epochs the run's history holds (a resumed run trains the others again)."""
    path = Path(state.run_dir) / TABLE
    if _matrices(state) and path.exists():
        done = sum(1 for row in state.history if "step" not in row)
        rows = [line for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line)["epoch"] <= done]
        tmp = path.with_name(f".{TABLE}.tmp")
        tmp.write_text("".join(line + "\n" for line in rows), encoding="utf-8")
        os.replace(tmp, path)


def tables_validation_end(state: Any, split: str) -> None:
    for matrix in _matrices(state):
        if matrix.matrix is not None:
            matrix.pending[split] = matrix.matrix  # a later evaluation of the split replaces it


def tables_epoch_end(state: Any, epoch: int) -> None:
    lines = []
    for matrix in _matrices(state):
        for split, cells in matrix.pending.items():
            lines.append(json.dumps({"epoch": epoch, "split": split, "metric": matrix.name,
                                     "normalize": matrix.normalize, "classes": matrix.classes, "matrix": cells}))
        matrix.pending.clear()
    if lines:
        with open(Path(state.run_dir) / TABLE, "a", encoding="utf-8") as handle:
            handle.write("".join(line + "\n" for line in lines))
