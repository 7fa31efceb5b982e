"""Builders for the built-in losses (imported only when a run builds).

Every loss is a `torch.nn` loss module called as `loss(outputs, targets)`, reducing to the mean
over the batch, moved to the run's device (class weights are buffers). Class weights given as
"balanced" are computed from the training split's targets (`targets.split_targets`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pipeforge.builtin import loss_params as lp
from pipeforge.context import BuildContext
from pipeforge.errors import PluginError, Problem, RecipeError
from pipeforge.builtin.targets import split_targets


def build_cross_entropy(params: lp.CrossEntropyParams, context: BuildContext) -> nn.Module:
    weight = class_weight(params.weight, context, "loss.weight", params.ignore_index)
    return _placed(nn.CrossEntropyLoss(weight=weight, ignore_index=params.ignore_index,
                                       label_smoothing=params.label_smoothing), context)


def build_nll(params: lp.NLLParams, context: BuildContext) -> nn.Module:
    weight = class_weight(params.weight, context, "loss.weight", params.ignore_index)
    return _placed(nn.NLLLoss(weight=weight, ignore_index=params.ignore_index), context)


def build_bce(params: lp.BCEParams, context: BuildContext) -> nn.Module:
    return _placed(nn.BCELoss(weight=_tensor(params.weight)), context)


def build_bce_with_logits(params: lp.BCEWithLogitsParams, context: BuildContext) -> nn.Module:
    if params.pos_weight == "balanced":
        pos_weight = balanced_pos_weight(context, "loss.pos_weight")
    else:
        pos_weight = _tensor(params.pos_weight)
    return _placed(nn.BCEWithLogitsLoss(weight=_tensor(params.weight), pos_weight=pos_weight), context)


def build_mse(params: lp.MSEParams, context: BuildContext) -> nn.Module:
    return _placed(nn.MSELoss(), context)


def build_l1(params: lp.L1Params, context: BuildContext) -> nn.Module:
    return _placed(nn.L1Loss(), context)


def build_smooth_l1(params: lp.SmoothL1Params, context: BuildContext) -> nn.Module:
    return _placed(nn.SmoothL1Loss(beta=params.beta), context)


def build_huber(params: lp.HuberParams, context: BuildContext) -> nn.Module:
    return _placed(nn.HuberLoss(delta=params.delta), context)


def build_kl_div(params: lp.KLDivParams, context: BuildContext) -> nn.Module:
    return _placed(nn.KLDivLoss(reduction=params.reduction, log_target=params.log_target), context)


def build_poisson_nll(params: lp.PoissonNLLParams, context: BuildContext) -> nn.Module:
    return _placed(nn.PoissonNLLLoss(log_input=params.log_input, full=params.full, eps=params.eps), context)


def build_hinge_embedding(params: lp.HingeEmbeddingParams, context: BuildContext) -> nn.Module:
    return _placed(nn.HingeEmbeddingLoss(margin=params.margin), context)


def build_soft_margin(params: lp.SoftMarginParams, context: BuildContext) -> nn.Module:
    return _placed(nn.SoftMarginLoss(), context)


def build_multi_margin(params: lp.MultiMarginParams, context: BuildContext) -> nn.Module:
    weight = class_weight(params.weight, context, "loss.weight")
    return _placed(nn.MultiMarginLoss(p=params.p, margin=params.margin, weight=weight), context)


def build_multilabel_margin(params: lp.MultiLabelMarginParams, context: BuildContext) -> nn.Module:
    return _placed(nn.MultiLabelMarginLoss(), context)


def build_multilabel_soft_margin(params: lp.MultiLabelSoftMarginParams, context: BuildContext) -> nn.Module:
    return _placed(nn.MultiLabelSoftMarginLoss(weight=_tensor(params.weight)), context)


# ---------------------------------------------------------------- weights


def class_weight(value: list[float] | str | None, context: BuildContext, key: str,
                 ignore_index: int | None = None) -> torch.Tensor | None:
    """A class-weight tensor from a list (one per class of the dataset, when it names its
    classes) or "balanced" (from the training split's labels); None stays None."""
    if value is None:
        return None
    if value == "balanced":
        return balanced_class_weights(context, key, ignore_index)
    classes = context.datasets.classes if context.datasets is not None else None
    if classes is not None and len(value) != len(classes):
        raise RecipeError([Problem(key, f"expected {len(classes)} weights, one per class of the dataset, "
                                        f"found {len(value)}")])
    return torch.tensor(value, dtype=torch.float32)


def balanced_class_weights(context: BuildContext, key: str, ignore_index: int | None = None) -> torch.Tensor:
    """n_samples / (n_classes × count of each class) over the training split's class-index
    labels (scikit-learn's "balanced"); labels equal to `ignore_index` are not counted."""
    labels = _train_targets(context, key)
    if labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise RecipeError([Problem(key, '"balanced" needs class-index targets (one integer per sample); the '
                                        f"training split's targets are {_shape(labels)}")])
    labels = labels.long()
    if ignore_index is not None:
        labels = labels[labels != ignore_index]
    classes = context.datasets.num_classes if context.datasets.num_classes is not None else (
        int(labels.max()) + 1 if labels.numel() else 0)
    if labels.numel() == 0:
        raise RecipeError([Problem(key, '"balanced" found no labels to count in the training split')])
    if labels.min() < 0 or labels.max() >= classes:
        raise RecipeError([Problem(key, f'"balanced" found labels outside 0..{classes - 1} in the training split '
                                        f"(from {int(labels.min())} to {int(labels.max())})")])
    counts = torch.bincount(labels, minlength=classes)
    empty = (counts == 0).nonzero().flatten().tolist()
    if empty:
        names = context.datasets.classes
        shown = ", ".join(repr(names[i]) if names else str(i) for i in empty[:5]) + (" …" if len(empty) > 5 else "")
        raise RecipeError([Problem(key, f'"balanced" cannot weight a class with no training sample ({shown}); '
                                        "give the weights as a list")])
    return labels.numel() / (classes * counts.to(torch.float32))


def balanced_pos_weight(context: BuildContext, key: str) -> torch.Tensor:
    """negatives / positives of each label (column) of the training split's targets, the
    weight torch's BCEWithLogitsLoss documents for `pos_weight`."""
    targets = _train_targets(context, key).to(torch.float64)
    if targets.dim() == 1:
        targets = targets.unsqueeze(1)
    targets = targets.reshape(targets.shape[0], -1)
    if targets.numel() and (targets.min() < 0 or targets.max() > 1):
        raise RecipeError([Problem(key, '"balanced" needs targets in [0, 1]; the training split has targets from '
                                        f"{float(targets.min()):g} to {float(targets.max()):g}")])
    positives = targets.sum(0)
    negatives = targets.shape[0] - positives
    if (positives == 0).any():
        first = int((positives == 0).nonzero()[0])
        raise RecipeError([Problem(key, f'"balanced" cannot weight label {first}: it is never positive in the '
                                        "training split; give pos_weight as a list")])
    return (negatives / positives).to(torch.float32)


def _train_targets(context: BuildContext, key: str) -> torch.Tensor:
    datasets = context.datasets
    if datasets is None or "train" not in datasets.splits:
        raise PluginError(f'{key} = "balanced" needs the training split, and none was built')
    return split_targets(datasets.splits["train"])


def _shape(tensor: torch.Tensor) -> str:
    return f"{str(tensor.dtype).removeprefix('torch.')} of shape {list(tensor.shape)}"


def _tensor(values: list[float] | None) -> torch.Tensor | None:
    return None if values is None else torch.tensor(values, dtype=torch.float32)


def _placed(loss: Any, context: BuildContext) -> Any:
    """The loss on the run's device, where its weights must be."""
    return loss.to(context.device) if context.device else loss
