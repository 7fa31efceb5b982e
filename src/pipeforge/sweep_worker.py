"""A sweep's worker process: imports torch and discovers plugins once, then trains trial after
trial in-process through the Python API (`pipeforge.api.run`, or `resume` for an interrupted
trial), each into its own run dir.

`pipeforge sweep` starts its workers with multiprocessing's "spawn" and talks to each through
two queues: the worker says `ready`, receives a task (one trial) or None (stop), and answers
with the trial's outcome. Torch uses one thread per worker (the workers are the parallelism).
SIGINT/SIGTERM set the worker's stop request: the running trial writes a checkpoint and ends
as `interrupted`, and the worker exits; a signal while idle just ends the worker.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
from pathlib import Path
from typing import Any

from pipeforge.context import StopRequest
from pipeforge.errors import Interrupted, PipeforgeError, TimeLimitReached
from pipeforge.sweep import PRUNED_REASON

# Messages from a worker to the sweep: (kind, worker index, payload).
READY, DONE, LOG = "ready", "done", "log"


def main(index: int, inbox: Any, outbox: Any) -> None:
    """The worker's loop (the target of its process)."""
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    stop = StopRequest()

    def asked_to_stop(signum: int, frame: Any) -> None:
        if stop.signal is None:
            stop.signal = signum

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, asked_to_stop)
    import torch  # once per worker: this is what a sweep saves on every trial

    torch.set_num_threads(1)
    from pipeforge import api
    from pipeforge.plugins import discover

    logger = logging.getLogger("pipeforge")
    handler = _Forward(outbox, index)
    logger.handlers = [handler]
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    plugins = discover()
    parent = os.getppid()
    outbox.put((READY, index, None))
    while True:
        try:
            task = inbox.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:  # the sweep was killed: no one will hand out work
                return
            continue
        if task is None:
            return
        if stop.signal is not None:  # handed a trial after a Ctrl-C: leave it for the next run
            outbox.put((DONE, index, {"number": task["number"], "status": "not started"}))
            return
        handler.trial = task["id"]
        outbox.put((DONE, index, run_trial(task, api, plugins, stop)))
        if stop.signal is not None:
            return


def run_trial(task: dict[str, Any], api: Any, plugins: Any, stop: StopRequest) -> dict[str, Any]:
    """Train one trial; its outcome: status (finished, pruned, interrupted, failed), error."""
    run_dir = Path(task["run_dir"])
    callbacks = []
    optuna = task.get("optuna")
    if optuna and optuna.get("pruning"):
        from pipeforge.sweep_optuna import PruningReporter

        callbacks.append(PruningReporter(optuna["storage"], optuna["study"], optuna["trial_id"], task["monitor"]))
    outcome: dict[str, Any] = {"number": task["number"]}
    try:
        if task["resume"]:
            result = api.resume(run_dir, callbacks=callbacks, stop=stop, plugins=plugins)
        else:
            result = api.run(Path(task["recipe"]), overrides=task["overrides"], run_dir=run_dir,
                             callbacks=callbacks, stop=stop, plugins=plugins)
        reason = result.stop_reason or ""
        outcome["status"] = "pruned" if reason.startswith(PRUNED_REASON) else "finished"
    except (Interrupted, TimeLimitReached) as exc:
        outcome.update(status="interrupted", error=str(exc).split(". Resume with")[0])
    except PipeforgeError as exc:
        outcome.update(status="failed", error=str(exc))
    except Exception as exc:  # a plugin's bug fails its trial, not the sweep
        outcome.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    return outcome


class _Forward(logging.Handler):
    """Sends the library's warnings to the sweep, which prints them with the trial's id."""

    def __init__(self, outbox: Any, index: int) -> None:
        super().__init__()
        self.outbox, self.index, self.trial = outbox, index, ""

    def emit(self, record: logging.LogRecord) -> None:
        self.outbox.put((LOG, self.index, f"{self.trial}: {record.getMessage()}"))
