"""Batches for the loop: a fast path for in-memory tensors, a DataLoader for everything else.

Both paths draw the epoch's order from the same `EpochOrder` — one `randperm` per epoch from the
run's shuffle generator — so a dataset gives the same batches whichever path serves it, and an
epoch can be resumed part-way by skipping the batches already done *without reading them*.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
from typing import Iterator, TypeVar

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset

from pipeforge.errors import PipeforgeError

T = TypeVar("T")


# Up to this size a split is permuted in one gather per epoch (a transient copy of the data);
# larger ones are gathered batch by batch, so memory stays at one copy.
WHOLE_EPOCH_GATHER_BYTES = 64 * 2**20


class EpochOrder(Sampler[int]):
    """Sample indices: a fresh permutation each epoch (or 0..n-1), minus the first `skip`.

    Under data parallelism every rank draws the same permutation and takes every `world`-th
    index from position `rank`. Training pads the permutation (repeating its start) so that all
    ranks run the same number of steps, as DistributedSampler does; evaluation does not pad, so
    each sample is counted exactly once.
    """

    def __init__(self, size: int, shuffle: bool, generator: torch.Generator | None,
                 rank: int = 0, world: int = 1, pad: bool = True) -> None:
        self.size = size
        self.shuffle = shuffle
        self.generator = generator
        self.rank = rank
        self.world = world
        self.pad = pad
        self.skip = 0

    @property
    def local_size(self) -> int:
        if self.world == 1:
            return self.size
        if self.pad:
            return -(-self.size // self.world)
        return len(range(self.rank, self.size, self.world))

    def permutation(self) -> torch.Tensor:
        order = torch.randperm(self.size, generator=self.generator) if self.shuffle else torch.arange(self.size)
        if self.world == 1:
            return order
        if self.pad:
            order = torch.cat([order, order[: self.local_size * self.world - self.size]])
        return order[self.rank :: self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self.permutation()[self.skip :].tolist())

    def __len__(self) -> int:
        return self.local_size - self.skip


class Batches:
    """An epoch's batches: `len()` is the full epoch, `epoch(skip)` iterates from batch `skip`."""

    def __init__(self, order: EpochOrder, batch_size: int, drop_last: bool) -> None:
        self.order = order
        self.batch_size = batch_size
        self.drop_last = drop_last

    def __len__(self) -> int:
        full, rest = divmod(self.order.local_size, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def samples(self, first: int, end: int) -> int:
        """Samples in batches `first` to `end - 1` of an epoch (only the last batch may be short)."""
        count = (end - first) * self.batch_size
        if end == len(self) and not self.drop_last:
            count -= len(self) * self.batch_size - self.order.local_size
        return count

    def epoch(self, skip: int = 0) -> Iterator[tuple[torch.Tensor, ...]]:
        raise NotImplementedError


class TensorBatches(Batches):
    """Batches sliced straight out of tensors, skipping per-item `__getitem__` and collate.

    The tensors are moved to the device once, so a small dataset lives on the GPU for the run.
    """

    def __init__(self, tensors: tuple[torch.Tensor, ...], order: EpochOrder, batch_size: int,
                 drop_last: bool, device: torch.device) -> None:
        super().__init__(order, batch_size, drop_last)
        self.tensors = tuple(t.to(device) for t in tensors)
        self.device = device
        self.nbytes = sum(t.numel() * t.element_size() for t in self.tensors)

    def epoch(self, skip: int = 0) -> Iterator[tuple[torch.Tensor, ...]]:
        order = self.order.permutation().to(self.device)
        order = order[skip * self.batch_size : len(self) * self.batch_size]
        if self.nbytes <= WHOLE_EPOCH_GATHER_BYTES:
            # Small data: one gather for the whole epoch, then every batch is a free view.
            shuffled = tuple(t.index_select(0, order) for t in self.tensors)
            for start in range(0, order.shape[0], self.batch_size):
                yield tuple(t[start : start + self.batch_size] for t in shuffled)
            return
        for start in range(0, order.shape[0], self.batch_size):
            index = order[start : start + self.batch_size]
            yield tuple(t.index_select(0, index) for t in self.tensors)


class LoaderBatches(Batches):
    """A DataLoader over any map-style dataset, with workers and pinned memory as configured."""

    def __init__(self, dataset: Dataset, order: EpochOrder, batch_size: int, drop_last: bool,
                 device: torch.device, num_workers: int) -> None:
        super().__init__(order, batch_size, drop_last)
        # The loader draws its workers' base seed from this generator at every epoch; without
        # one it would draw from torch's global RNG and shift dropout/augmentation randomness.
        seed = order.generator.initial_seed() if order.generator is not None else 0
        self.loader = DataLoader(
            dataset, batch_size=batch_size, sampler=order, drop_last=drop_last,
            num_workers=num_workers, pin_memory=device.type == "cuda",
            persistent_workers=num_workers > 0, generator=torch.Generator().manual_seed(seed),
            worker_init_fn=_ignore_stop_signals if num_workers > 0 else None,
        )

    def epoch(self, skip: int = 0) -> Iterator[tuple[torch.Tensor, ...]]:
        self.order.skip = skip * self.batch_size
        with _stop_signals_held():  # the workers (if any) are forked here
            batches = iter(self.loader)
        return self._failing_plainly(batches)

    def _failing_plainly(self, batches: Iterator[T]) -> Iterator[T]:
        """`batches`; if the loader fails, its workers are stopped and the error is made plain.

        torch puts a worker's whole traceback into the message of the error it re-raises, so a
        `DataError` naming a bad file would reach the user as a page of traceback. A pipeforge
        error is raised again as it was raised in the worker; any other error with its message
        and the worker it came from. torch's error stays attached as the cause, so `--debug`
        (which prints the chain of an unexpected error) still shows the worker's traceback.
        """
        try:
            yield from batches
        except Exception as exc:
            self._stop_workers(batches)
            plain = _as_raised_in_worker(exc)
            if plain is None:
                raise
            raise plain from exc

    def _stop_workers(self, batches: Iterator[object]) -> None:
        # The workers ignore SIGTERM (see `_stop_signals_held`) and the failed iterator lives on
        # in reference cycles through the error's traceback, so nothing else would stop them:
        # Python's exit would wait for them forever.
        shutdown = getattr(batches, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        self.loader._iterator = None  # a later epoch, if any, starts new workers


# torch re-raises a worker's exception as `type(exc)(f"Caught {name} {where}.\nOriginal {traceback}")`.
_WORKER_HEADER = re.compile(r"Caught (\w+) (in .+?)\.\nOriginal ")


def _as_raised_in_worker(exc: Exception) -> Exception | None:
    """The error `exc` re-raised by torch for a worker, rebuilt without the traceback text;
    None when `exc` is not such an error or cannot be rebuilt from one message."""
    text = str(exc)
    header = _WORKER_HEADER.match(text)
    if header is None:
        return None
    name, where = header.groups()
    # The traceback ends with the exception's own line, "module.Name: message", unindented
    # (frames are indented); a chained cause comes earlier, so the last such line is it.
    lines = list(re.finditer(rf"^(?:[\w.]+\.)?{re.escape(name)}(?:: |$)", text, re.MULTILINE))
    if not lines:
        return None
    message = text[lines[-1].end():].rstrip("\n")
    if not isinstance(exc, PipeforgeError):
        message = f"{message} ({where})"
    try:
        return type(exc)(message)
    except Exception:  # an exception type that takes other arguments: leave torch's as it is
        return None


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def _stop_signals_held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back while DataLoader workers are forked, then deliver them here.

    A SIGTERM sent to the whole process group (systemd, Slurm's scancel, `kill -- -PGID`) also
    reaches the workers, and torch's worker handler dies of it, so the run would fail instead
    of checkpointing. Workers start with both signals blocked and ignore them from their first
    instruction on (`_ignore_stop_signals`); the training process alone decides how to stop,
    and its workers end with it.
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield  # signals are only ever handled on the main thread
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _ignore_stop_signals(worker_id: int) -> None:
    """A DataLoader worker's first step: leave SIGINT/SIGTERM to the training process."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def make_batches(
    dataset: Dataset, *, batch_size: int, shuffle: bool, drop_last: bool,
    generator: torch.Generator | None, device: torch.device, num_workers: int | str = 0,
    rank: int = 0, world: int = 1, pad: bool = True,
) -> Batches:
    """The batches of one split (this rank's shard of it), re-iterable every epoch."""
    order = EpochOrder(len(dataset), shuffle, generator, rank, world, pad)
    if isinstance(dataset, TensorDataset):
        return TensorBatches(dataset.tensors, order, batch_size, drop_last, device)
    return LoaderBatches(dataset, order, batch_size, drop_last, device, resolve_workers(num_workers, world))


def resolve_workers(num_workers: int | str, world: int = 1) -> int:
    """"auto": leave one CPU to the training process(es), prepare batches on the rest (max 4)."""
    if num_workers != "auto":
        return int(num_workers)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(4, cpus // world - 1))
