"""The targets of a dataset split as one tensor, read without loading its inputs where the
dataset allows: what class weights ("balanced"), and anything else that counts labels, need.

Imports torch: used by builders only, never by the control plane.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import ConcatDataset, Subset, TensorDataset

from pipeforge.errors import DataError


def split_targets(dataset: Any) -> torch.Tensor:
    """Every target of a map-style `(input, target)` dataset, in index order, stacked.

    Fast paths read no input: a `TensorDataset` (its last tensor), a dataset with a `targets`
    attribute (torchvision's), and `Subset` / `ConcatDataset` of those. Any other dataset is
    indexed sample by sample, which loads (and transforms) every input once.
    """
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[-1]
    if isinstance(dataset, Subset):
        return split_targets(dataset.dataset)[torch.as_tensor(list(dataset.indices), dtype=torch.long)]
    if isinstance(dataset, ConcatDataset):
        return torch.cat([split_targets(part) for part in dataset.datasets])
    targets = getattr(dataset, "targets", None)
    if targets is not None and len(targets) == len(dataset):
        return torch.as_tensor(targets)
    try:
        return torch.stack([torch.as_tensor(dataset[index][1]) for index in range(len(dataset))])
    except (TypeError, RuntimeError) as exc:
        raise DataError(f"cannot read the targets of {type(dataset).__name__} as one tensor: {exc}") from None
