"""The process a run trains in: seeds, device, torch threads and deterministic mode."""

from __future__ import annotations

import contextlib
import os
import random
from typing import Iterator

import torch

from pipeforge.distributed import Dist
from pipeforge.errors import UsageError


@contextlib.contextmanager
def deterministic_algorithms(wanted: bool) -> Iterator[None]:
    """torch's deterministic mode for the run (it is process-wide: restored afterwards)."""
    if not wanted:
        yield
        return
    # cuBLAS needs a fixed workspace to be deterministic; it must be set before CUDA starts.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1], before[2]


def set_threads(threads: int | str) -> None:
    """torch's CPU threads for this process: `threads`, or for "auto" what `auto_threads` says."""
    if threads == "auto":
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        threads = auto_threads(cpus, load, os.environ.get("OMP_NUM_THREADS"))
        if threads is None:
            return
    torch.set_num_threads(int(threads))


def auto_threads(cpus: int, load: float, omp_num_threads: str | None) -> int | None:
    """The thread count "auto" picks (None: leave torch's own, set by OMP_NUM_THREADS).

    Measured (benchmarks/threads.py, RESULTS-threads.md): on 2 CPUs, 2 threads trained 1.7×
    (ResNet-18) to 38× (a small MLP) slower than 1, with or without other load; with other
    processes busy, more threads make small models many times slower as they wait for each
    other. So: 1 thread on 2 CPUs or fewer, or when the load average says the CPUs are half
    busy; else one per CPU, at most 8."""
    if omp_num_threads:
        return None
    if cpus <= 2 or load >= 0.5 * cpus:
        return 1
    return min(cpus, 8)


def seed_everything(seed: int) -> None:
    """Seed python, numpy (when installed) and torch on every device."""
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy
    except ImportError:
        return
    numpy.random.seed(seed % 2**32)


def resolve_device(name: str, dist: Dist = Dist()) -> torch.device:
    """"auto" → CUDA when present, else CPU; "cuda" without a GPU is an error, not a fallback.
    Under data parallelism each process uses the GPU of its local rank."""
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError('trainer.device is "cuda" but no CUDA device is available; use "auto" or "cpu"')
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", dist.local_rank)
