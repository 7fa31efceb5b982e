"""Batches for the loop: a fast path for in-memory tensors, a DataLoader for everything else.

Both paths draw the epoch's order from the same `EpochOrder`, one `randperm` per epoch from the
run's generator, so a dataset gives the same batches whichever path serves it.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset


class EpochOrder(Sampler[int]):
    """Sample indices: a fresh permutation each epoch (or 0..n-1 when not shuffling)."""

    def __init__(self, size: int, shuffle: bool, generator: torch.Generator | None) -> None:
        self.size = size
        self.shuffle = shuffle
        self.generator = generator

    def permutation(self) -> torch.Tensor:
        if self.shuffle:
            return torch.randperm(self.size, generator=self.generator)
        return torch.arange(self.size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.permutation().tolist())

    def __len__(self) -> int:
        return self.size


class TensorBatches:
    """Batches sliced straight out of tensors, skipping per-item `__getitem__` and collate.

    The tensors are moved to the device once, so a small dataset lives on the GPU for the run.
    """

    def __init__(
        self, tensors: tuple[torch.Tensor, ...], order: EpochOrder, batch_size: int,
        drop_last: bool, device: torch.device,
    ) -> None:
        self.tensors = tuple(t.to(device) for t in tensors)
        self.order = order
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.device = device

    def __len__(self) -> int:
        full, rest = divmod(self.order.size, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        order = self.order.permutation().to(self.device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start : start + self.batch_size]
            yield tuple(t.index_select(0, index) for t in self.tensors)


def make_batches(
    dataset: Dataset, *, batch_size: int, shuffle: bool, drop_last: bool,
    generator: torch.Generator | None, device: torch.device, num_workers: int = 0,
) -> Any:
    """An iterable of `(inputs, targets)` batches over `dataset`, re-iterable every epoch."""
    order = EpochOrder(len(dataset), shuffle, generator)
    if isinstance(dataset, TensorDataset):
        return TensorBatches(dataset.tensors, order, batch_size, drop_last, device)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=order,
        drop_last=drop_last,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=num_workers > 0,
    )
