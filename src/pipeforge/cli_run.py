"""`pipeforge run`: a new run, a resumed one, or either launched on several processes.

The steps: validate the recipe → (launch N processes under torchrun and stop here) → train
through the Python API (`pipeforge.api.run` / `resume`) with SIGINT/SIGTERM turned into a
stop request and the console reporter registered → print where the run is.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
from pathlib import Path
from typing import Any, Callable, Iterator

from rich.text import Text

from pipeforge import api
from pipeforge.cli_common import discover_plugins, err, error, out, show_log, summary
from pipeforge.context import StopRequest
from pipeforge.distributed import Dist
from pipeforge.errors import UsageError
from pipeforge.recipe import Recipe, load_recipe
from pipeforge.rundir import RunDir, default_path


def add_commands(command: Callable[..., Any], recipe_args: Callable[..., None]) -> None:
    """Add `run` with the CLI's `command(name, func, help)` factory."""
    run = command("run", cmd_run, "train a model as a recipe describes")
    recipe_args(run, optional=True)
    run.add_argument("--run-dir", type=Path, help="output directory (default runs/<name>-<timestamp>); must be new or empty")
    run.add_argument(
        "--nproc-per-node", type=int, metavar="N",
        help="train data-parallel with N processes, launched by torch's elastic launcher (torchrun)",
    )
    run.add_argument(
        "--max-restarts", type=int, default=0, metavar="K",
        help="with --nproc-per-node: when a process fails, restart the job up to K times; each restart "
        "continues from the newest checkpoint (as torchrun --max-restarts does)",
    )
    run.add_argument(
        "--resume", type=Path, metavar="RUN_DIR",
        help="continue RUN_DIR from its latest valid checkpoint (RECIPE defaults to RUN_DIR/recipe.toml; "
        f"only {', '.join(api.RESUMABLE_CHANGES)} may change)",
    )
    run.add_argument("--quiet", action="store_true", help="print only the run dir and errors")


def cmd_run(args: argparse.Namespace) -> int:
    dist = Dist.from_env()
    show_log(quiet=args.quiet or not dist.is_main)
    plugins = discover_plugins()
    if args.resume is None and args.recipe is None:
        raise UsageError("run needs a RECIPE (or --resume RUN_DIR)")
    recipe = load_recipe(args.recipe or args.resume / "recipe.toml", plugins.registry, args.overrides)
    if args.nproc_per_node is not None:
        return _launch(args, recipe)
    if args.max_restarts:
        raise UsageError("--max-restarts needs --nproc-per-node (or run under torchrun --max-restarts)")
    from pipeforge.console import ConsoleReporter  # torch is imported from here on

    # Other ranks of a data-parallel job stay silent unless they fail.
    loud = dist.is_main and not args.quiet
    callbacks = [ConsoleReporter(err, progress=err.is_terminal and loud, lines=loud)] if dist.is_main else []
    stop = StopRequest()
    with _signals_request(stop):
        if args.resume is not None:
            result = api.resume(args.resume, overrides=args.overrides, recipe=args.recipe,
                                callbacks=callbacks, stop=stop, plugins=plugins)
        else:
            result = api.run(args.recipe, overrides=args.overrides, run_dir=args.run_dir,
                             callbacks=callbacks, stop=stop, plugins=plugins)
    if dist.is_main:
        if loud and result.history:
            out.print(Text(f"done: {summary(result.history[-1])}"))
        out.print(Text(f"run dir: {result.run_dir}"))
    return 0


def _launch(args: argparse.Namespace, recipe: Recipe) -> int:
    """`run --nproc-per-node N`: the same command under torch's launcher, run dir fixed first.

    What can be checked here is refused here, once, before any process starts (`UsageError`):
    under the launcher each rank would refuse it, and the first to exit can take rank 0 down
    before rank 0 says why. A job that fails later ends with its first failing process's exit
    code and one line saying which process that was.
    """
    from pipeforge.distributed import launch

    nproc = args.nproc_per_node
    if nproc < 1:
        raise UsageError(f"--nproc-per-node must be 1 or more, not {nproc}")
    if not 0 <= args.max_restarts <= 1000:
        raise UsageError(f"--max-restarts must be from 0 to 1000, not {args.max_restarts}")
    if recipe.trainer.strategy == "none":
        raise UsageError('trainer.strategy is "none" but --nproc-per-node asks for several processes')
    run_dir = args.run_dir or default_path(recipe.run.name)
    if args.resume is None:
        RunDir.check_claimable(run_dir)
    else:
        _check_resumable(args.resume)
    _check_devices(recipe.trainer.device, nproc)
    argv = ["run"]
    if args.resume is not None:
        argv += ["--resume", str(args.resume)]
    if args.recipe is not None:
        argv.append(str(args.recipe))
    if args.resume is None:
        argv += ["--run-dir", str(run_dir)]
    for override in args.overrides:
        argv += ["--set", override]
    if args.quiet:
        argv.append("--quiet")
    end = launch(nproc, argv, args.max_restarts)
    if end.failure is not None:
        error(f"the data-parallel run stopped: {end.failure}")
    return end.exit_code


def _check_resumable(run_dir: Path) -> None:
    """What `--resume` refuses on rank 0 alone: an unreadable newest checkpoint (`CheckpointError`),
    a run dir another process holds or where nothing can be written (`UsageError`)."""
    from pipeforge import checkpoint

    checkpoint.resumable(run_dir / "checkpoints")
    with RunDir(run_dir).lock():
        pass


def _check_devices(device: str, nproc: int) -> None:
    """A process per GPU: refuse more processes than GPUs (the surplus ones would fail to start)."""
    if device == "cpu":
        return
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device == "cuda" and gpus == 0:
        raise UsageError('trainer.device is "cuda" but no CUDA device is available; use "auto" or "cpu"')
    if 0 < gpus < nproc:
        raise UsageError(
            f"--nproc-per-node {nproc} needs a GPU for each process and {gpus} "
            f"{'is' if gpus == 1 else 'are'} available; use --nproc-per-node {gpus}, "
            'or --set trainer.device="cpu" to train on the CPU'
        )


@contextlib.contextmanager
def _signals_request(stop: StopRequest) -> Iterator[None]:
    """SIGINT/SIGTERM ask the loop to checkpoint and stop; a second one exits at once."""

    def handler(signum: int, frame: Any) -> None:
        if stop.signal is not None:
            os._exit(128 + signum)
        stop.signal = signum

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
