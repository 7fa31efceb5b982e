"""What `check-plugin` and the pytest fixtures do to a built component: check it as a run would
use it, and say what is wrong in words a plugin author can act on.

Each function returns a list of problems (plain messages; the caller names the component), so
that a check lists everything wrong at once instead of stopping at the first. Imported only
when a component is checked: it imports torch.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from pipeforge.context import Datasets
from pipeforge.contract import check_callback, check_metric, check_state
from pipeforge.errors import PipeforgeError
from pipeforge.loaders import make_batches
from pipeforge.plugins import new_manager, register

BATCH = 4  # samples in the batch a model is tried on


def without_label(message: str, label: str) -> str:
    """`message` without a leading `label` (the caller shows the label once)."""
    return message[len(label):].lstrip(":, ") if message.startswith(label) else message


def failure(exc: BaseException, label: str, doing: str) -> str:
    """One line for an exception raised by plugin code while `doing` something."""
    if isinstance(exc, PipeforgeError):
        return f"{doing} failed: {without_label(str(exc), label)}"
    text = " ".join(str(exc).split())[:300]
    return f"{doing} raised {type(exc).__name__}" + (f": {text}" if text else "")


def built_problems(kind: str, value: Any, label: str) -> list[str]:
    """What the engine would refuse in a built component of `kind`: the type each kind's
    builder must return, the metric and callback contracts, and callback hook names."""
    if kind == "dataset" and not isinstance(value, Datasets):
        return [f"returned {type(value).__name__}, expected pipeforge.Datasets (splits and classes)"]
    if kind == "model" and not isinstance(value, torch.nn.Module):
        return [f"returned {type(value).__name__}, expected a torch.nn.Module"]
    if kind == "optimizer" and not isinstance(value, torch.optim.Optimizer):
        return [f"returned {type(value).__name__}, expected a torch.optim.Optimizer"]
    if kind == "scheduler" and not callable(getattr(value, "step", None)):
        return [f"returned {type(value).__name__}, expected an LR scheduler (with step())"]
    if kind in ("loss", "transform") and not callable(value):
        return [f"returned {type(value).__name__}, which cannot be called"]
    if kind == "metric":
        try:  # data_parallel: a metric that cannot all_reduce would fail only under torchrun
            check_metric(value, label, data_parallel=True)
        except PipeforgeError as exc:
            return [without_label(str(exc), label)]
    if kind == "callback":
        return callback_problems(value, label)
    return []


def callback_problems(callback: Any, label: str) -> list[str]:
    """A callback's contract: an object, hook names and arguments that exist, and state that
    survives a checkpoint (`state_dict()` of plain values, read back by `load_state_dict`)."""
    try:
        check_callback(callback, label)
        register(new_manager(), callback, label)
    except PipeforgeError as exc:
        return [without_label(str(exc), label)]
    saver = getattr(callback, "state_dict", None)
    if not callable(saver):
        return []
    try:
        state = saver()
        check_state(state, label)
    except Exception as exc:
        return [failure(exc, label, "state_dict()")]
    loader = getattr(callback, "load_state_dict", None)
    if not callable(loader):
        return ["has state_dict() but no load_state_dict(state): a resumed run could not restore it"]
    try:
        loader(state)
    except Exception as exc:
        return [failure(exc, label, "load_state_dict(state_dict())")]
    return []


def first_batch(datasets: Datasets, label: str) -> tuple[list[str], tuple[torch.Tensor, torch.Tensor] | None]:
    """(problems, the first `BATCH` training samples as the engine batches them)."""
    problems = []
    if datasets.classes is not None and not (
            isinstance(datasets.classes, list) and all(isinstance(c, str) for c in datasets.classes)):
        problems.append(f"its classes must be a list of names (str), found {datasets.classes!r:.80}")
    for split, data in datasets.splits.items():
        if not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
            problems.append(f"split '{split}' is a {type(data).__name__}, expected a map-style dataset "
                            "(len() and [index]), e.g. a TensorDataset")
    if "train" not in datasets.splits:
        problems.append(f"has no 'train' split (it has: {', '.join(datasets.splits) or 'none'})")
    if problems:
        return problems, None
    train = datasets.splits["train"]
    if len(train) == 0:
        return ["its 'train' split is empty"], None
    try:
        batches = make_batches(train, batch_size=BATCH, shuffle=False, drop_last=False, generator=None,
                               device=torch.device("cpu"), num_workers=0)
        batch = next(iter(batches.epoch()))
    except Exception as exc:
        return [failure(exc, label, "reading the first batch of 'train'")], None
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2
            and all(isinstance(part, torch.Tensor) for part in batch)):
        return ["its 'train' samples must be (input, target) pairs of tensors (or of what collates "
                f"into tensors), found a batch of {_describe(batch)}"], None
    inputs, targets = batch
    if datasets.classes is not None:
        wrong = targets.is_floating_point() or targets.dim() != 1
        if wrong or (targets.numel() and not (0 <= int(targets.min()) and int(targets.max()) < len(datasets.classes))):
            problems.append(f"its targets must be class indices from 0 to {len(datasets.classes) - 1} "
                            f"(it has {len(datasets.classes)} classes), found {targets.tolist()!r:.80}")
    return problems, (inputs, targets)


def step_problems(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor], datasets: Datasets,
                  loss_fn: Any, label: str, data_label: str) -> tuple[list[str], torch.Tensor | None]:
    """One training step on `batch`: forward, output shape against the data, loss, backward.
    Returns (problems, the outputs, detached) so metrics and losses can be tried on them."""
    inputs, targets = batch
    model.train()
    try:
        outputs = model(inputs)
    except Exception as exc:
        return [failure(exc, label, f"forward on the first batch of {data_label} (inputs {tuple(inputs.shape)})")], None
    if not isinstance(outputs, torch.Tensor):
        return [f"forward returned {type(outputs).__name__}, expected a tensor of outputs"], None
    if outputs.dim() == 0 or outputs.shape[0] != targets.shape[0]:
        return [f"forward on {targets.shape[0]} samples of {data_label} returned shape {tuple(outputs.shape)}; "
                "the first dimension must be the batch"], None
    classes = datasets.num_classes
    if classes is not None and (outputs.dim() != 2 or outputs.shape[1] != classes):
        width = outputs.shape[1] if outputs.dim() == 2 else tuple(outputs.shape[1:])
        return [f"outputs {width} values per sample, but {data_label} has {classes} classes; "
                "give its last layer context.datasets.num_classes outputs"], None
    try:
        loss = loss_fn(outputs, targets)
        if not (isinstance(loss, torch.Tensor) and loss.dim() == 0):
            return [f"the loss of its outputs is {_describe(loss)}, expected a 0-d tensor"], None
        value = float(loss.detach())
        if not math.isfinite(value):
            return [f"the loss of its outputs on {data_label}'s first batch is {value}"], None
        loss.backward()
    except Exception as exc:
        return [failure(exc, label, "the loss and backward pass on its outputs")], None
    trainable = [p for p in model.parameters() if p.requires_grad]
    if trainable and all(p.grad is None for p in trainable):
        return ["backward reached none of its parameters: the outputs do not depend on them"], None
    return [], outputs.detach()


def metric_run_problems(metric: Any, outputs: torch.Tensor, targets: torch.Tensor, label: str) -> list[str]:
    """Evaluate `metric` as the engine does on one batch: reset, update, all_reduce, compute."""
    try:
        with warnings.catch_warnings():  # torch's warnings about these outputs say nothing new here
            warnings.simplefilter("ignore")
            metric.reset()
            metric.update(outputs, targets)
            if callable(getattr(metric, "all_reduce", None)):
                metric.all_reduce(lambda tensor: tensor)  # one process: the sum is the tensor
            value = metric.compute()
    except Exception as exc:
        return [failure(exc, label, "reset/update/all_reduce/compute on a model's outputs")]
    try:
        float(value)
    except (TypeError, ValueError):
        return [f"compute() returned {_describe(value)}, expected a number"]
    return []


def loss_run_problems(loss_fn: Any, outputs: torch.Tensor, targets: torch.Tensor, label: str) -> list[str]:
    """Call a loss on a model's outputs: it must give a 0-d tensor that can be back-propagated."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = loss_fn(outputs.clone().requires_grad_(True), targets)
        if not (isinstance(value, torch.Tensor) and value.dim() == 0):
            return [f"returned {_describe(value)} for a batch, expected a 0-d tensor"]
        value.backward()
    except Exception as exc:
        return [failure(exc, label, "calling it on a model's outputs and targets")]
    return []


def optimizer_step_problems(optimizer: Any, model: torch.nn.Module, label: str) -> list[str]:
    """One step of `optimizer` on `model` (whose parameters it was built over)."""
    try:
        optimizer.zero_grad()
        sum(p.float().sum() for p in model.parameters() if p.requires_grad).backward()
        optimizer.step()
    except Exception as exc:
        return [failure(exc, label, "a step")]
    return []


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}: " + ", ".join(_describe(v) for v in value[:3])
    return f"a {type(value).__name__}"
