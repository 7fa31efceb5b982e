"""Data-parallel runs under torch's own launcher (torchrun / torch.distributed.run).

pipeforge does not manage processes: torchrun starts one process per rank and sets WORLD_SIZE,
RANK and LOCAL_RANK; `Dist.from_env()` reads them (`launch` runs the same launcher for
`run --nproc-per-node`). With more than one process the engine joins a
process group (gloo on CPU, nccl on CUDA), wraps the model in DistributedDataParallel, gives
each rank its shard of every split, and all-reduces the metrics; only rank 0 writes anything.
Importing this module does not import torch.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any


@dataclass(frozen=True)
class Dist:
    """This process's place in the job. A single process is rank 0 of a world of 1."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Dist:
        """Read torchrun's environment; without it, a single process."""
        return cls(
            rank=int(os.environ.get("RANK", 0)),
            world=int(os.environ.get("WORLD_SIZE", 1)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        )

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def start(self, device_type: str, timeout_s: float) -> None:
        """Join the process group: nccl for CUDA, gloo for CPU. A collective that waits longer
        than `timeout_s` (a rank died or hangs) fails instead of hanging the job."""
        if not self.enabled:
            return
        import torch
        import torch.distributed as dist

        if device_type == "cuda":
            torch.cuda.set_device(self.local_rank)
        if not dist.is_initialized():
            backend = "nccl" if device_type == "cuda" else "gloo"
            timeout = timedelta(seconds=timeout_s)
            attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
            if attempt != "0" and "MASTER_ADDR" in os.environ:
                # torchrun restarted the job (--max-restarts) and its store still holds the
                # failed attempt's addresses: gloo would dial the dead processes. This attempt's
                # keys get a prefix of their own.
                store = dist.PrefixStore(f"pipeforge/attempt-{attempt}", _job_store(self, timeout))
                dist.init_process_group(backend, store=store, rank=self.rank, world_size=self.world, timeout=timeout)
            else:
                dist.init_process_group(backend, timeout=timeout)
        # Flags the ranks agree on (stop, checkpoint due) travel on the CPU, in a group of their
        # own, so asking never waits for the device (see `Flags`).
        _CONTROL["group"] = dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout_s))

    def stop(self, clean: bool) -> None:
        """Leave the process group; after a clean finish, first wait for every rank so none
        tears down its communication threads while another still talks to it."""
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                if clean:
                    dist.barrier()
                _CONTROL.pop("group", None)
                dist.destroy_process_group()

    def sum(self, tensor: Any) -> Any:
        """All-reduce `tensor` by summing across ranks (in place); a no-op on one process."""
        if self.enabled:
            import torch.distributed as dist

            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def share(self, value: Any) -> Any:
        """Rank 0's `value` on every rank (e.g. the run dir it claimed)."""
        if not self.enabled:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def _job_store(dist: Dist, timeout: timedelta) -> Any:
    """The launcher's key-value store, at MASTER_ADDR:MASTER_PORT: the elastic agent serves it
    when TORCHELASTIC_USE_AGENT_STORE says so, else rank 0 does."""
    import torch.distributed as torch_dist

    served_by_agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    return torch_dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), dist.world,
                               is_master=dist.is_main and not served_by_agent, timeout=timeout, multi_tenant=True)


_CONTROL: dict[str, Any] = {}  # the process group for `Flags` while a job runs


class Flags:
    """Yes/no questions every rank answers for itself (a signal came, a callback asked to stop,
    rank 0's clock says a checkpoint is due) and all must act on alike: the answer is whether
    any rank said yes.

    `exchange` is called after every step. Every `interval` calls it starts an all-reduce of the
    answers in the background, on the CPU, and returns the answers of the exchange before: so
    training never waits for the other ranks or for the device (a blocking all-reduce and an
    `.item()` after every step would), and on small models the exchange costs nothing per step.
    The interval travels with the answers: rank 0 picks it so that exchanges are about
    `EVERY_S` apart, and every rank reads the same value, so all act at the same step. Between
    exchanges it answers no. `now` asks and waits (after `drain`), for points reached once an
    epoch. On one process both return the answers as given.
    """

    EVERY_S = 0.05
    MAX_INTERVAL = 1024

    def __init__(self, dist: Dist, count: int) -> None:
        self.dist = dist
        self.count = count
        self.pending: tuple[Any, Any] | None = None
        self.interval = self.countdown = 1
        self.last = time.monotonic()

    def exchange(self, answers: list[bool]) -> list[bool]:
        if not self.dist.enabled:
            return answers
        self.countdown -= 1
        if self.countdown > 0:
            return [False] * self.count
        import torch
        import torch.distributed as dist

        suggested = 0.0
        if self.dist.is_main:  # steps per EVERY_S, from how long the last `interval` steps took
            now = time.monotonic()
            per_step = (now - self.last) / self.interval
            self.last = now
            suggested = float(min(self.MAX_INTERVAL, max(1, int(self.EVERY_S / per_step)) if per_step > 0 else 1))
        tensor = torch.tensor([float(a) for a in answers] + [suggested])
        handle = dist.all_reduce(tensor, group=_CONTROL.get("group"), async_op=True)
        previous, self.pending = self.pending, (handle, tensor)
        agreed = self._result(previous)
        self.countdown = self.interval
        return agreed

    def drain(self) -> list[bool]:
        """The answers of the last `exchange` not yet returned (all no if none)."""
        previous, self.pending = self.pending, None
        agreed = self._result(previous)
        self.countdown, self.last = self.interval, time.monotonic()
        return agreed

    def now(self, answers: list[bool]) -> list[bool]:
        """All-reduce `answers` and wait for the result."""
        if not self.dist.enabled:
            return answers
        import torch
        import torch.distributed as dist

        tensor = torch.tensor([float(a) for a in answers])
        dist.all_reduce(tensor, group=_CONTROL.get("group"))
        return [value > 0 for value in tensor.tolist()]

    def _result(self, pending: tuple[Any, Any] | None) -> list[bool]:
        if pending is None:
            return [False] * self.count
        handle, tensor = pending
        handle.wait()  # started `interval` steps ago: done by now, in all but a slow rank's case
        *answers, interval = tensor.tolist()  # a CPU tensor: no device sync
        self.interval = max(1, int(interval))  # rank 0's suggestion, the same on every rank
        return [value > 0 for value in answers]


@dataclass(frozen=True)
class JobEnd:
    """How a launched job ended: the exit code for the command, and which process failed first
    (None when every process finished)."""

    exit_code: int
    failure: str | None = None


def launch(nproc: int, argv: list[str], max_restarts: int = 0) -> JobEnd:
    """Run `pipeforge argv` in `nproc` processes on this machine under torch's elastic launcher
    (what torchrun runs), and wait for them; after a failure, start them again up to
    `max_restarts` times (each restart continues the run from its newest checkpoint).

    The exit code is 0, or that of the first process to fail (128 + N for one killed by signal
    N, or when this process was); that process has said why on stderr. torch's own report of a
    failure (a traceback and a table) is not printed: `JobEnd.failure` says it in one line.
    """
    import logging

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # The agent logs each failed process as an error; the ranks and JobEnd.failure say it already.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    args = parse_args(["--standalone", f"--nproc-per-node={nproc}", f"--max-restarts={max_restarts}",
                       "-m", "pipeforge", *argv])
    try:
        run(args)
    except ChildFailedError as exc:
        rank, first = exc.get_first_failure()
        if first.exitcode < 0:  # killed by a signal
            return JobEnd(128 - first.exitcode, f"rank {rank} (pid {first.pid}) was killed by {first.signal_name()}")
        return JobEnd(first.exitcode, f"rank {rank} (pid {first.pid}) exited with code {first.exitcode}")
    except SignalException as exc:
        # SIGINT/SIGTERM to this process: the agent passed it on to every rank (which checkpoint
        # and say so) and waited for them.
        return JobEnd(128 + int(exc.sigval))
    except Exception as exc:  # the launcher itself failed: rendezvous, a port, …
        reason = " ".join(str(exc).split())[:300] or "no reason given"
        return JobEnd(1, f"torch's launcher could not run the processes: {type(exc).__name__}: {reason}")
    return JobEnd(0)
