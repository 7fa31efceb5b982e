"""`pipeforge run`: a new run, a resumed one, or either launched on several processes.

The steps: validate the recipe → (launch N processes and stop here) → join the process group
when torchrun started us → claim the run dir (rank 0) or check the resume → train.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from rich.text import Text

from pipeforge import __version__
from pipeforge.cli import _discover, _summary, _warn, err, out
from pipeforge.distributed import Dist
from pipeforge.errors import Interrupted, UsageError
from pipeforge.plugins import Plugins
from pipeforge.recipe import Recipe, load_recipe, resolved
from pipeforge.rundir import RunDir, default_path

if TYPE_CHECKING:
    from pipeforge.checkpoint import Checkpoint

# Recipe values that may differ when a run is resumed: they change how long or where it runs,
# not what it computes.
RESUMABLE_CHANGES = (
    "trainer.epochs", "trainer.num_workers", "trainer.keep_checkpoints",
    "trainer.checkpoint_every_steps", "trainer.checkpoint_every_epochs", "trainer.device",
)


def cmd_run(args: argparse.Namespace) -> int:
    plugins = _discover()
    if args.resume is None and args.recipe is None:
        raise UsageError("run needs a RECIPE (or --resume RUN_DIR)")
    recipe = load_recipe(args.recipe or args.resume / "recipe.toml", plugins.registry, args.overrides)
    if args.nproc_per_node:
        return _launch(args, recipe)
    dist = _join(recipe)
    clean = False
    try:
        code = _resume(args, plugins, dist) if args.resume else _new_run(args, recipe, plugins, dist)
        clean = True
        return code
    finally:
        dist.stop(clean)


def _new_run(args: argparse.Namespace, recipe: Recipe, plugins: Plugins, dist: Dist) -> int:
    # Rank 0 claims the run dir and tells the others where it is (or why it could not).
    run_dir, failure = None, None
    if dist.is_main:
        try:
            run_dir = RunDir.claim(args.run_dir, recipe.run.name)
        except UsageError as exc:
            failure = str(exc)
    path, failure = dist.share((str(run_dir.path) if run_dir else None, failure))
    if failure is not None:
        raise UsageError(failure)
    if not dist.is_main:
        return _fit(args, recipe, plugins, RunDir(Path(path)), None, dist)
    try:  # claim() locked the run dir: nothing of another process is ever discarded here
        run_dir.write_recipe(resolved(recipe, plugins.registry), _recipe_header(args, run_dir.path))
        run_dir.write_env(_environment(recipe, plugins, dist))
        return _fit(args, recipe, plugins, run_dir, None, dist)
    except BaseException as exc:
        if run_dir.discard_if_untrained():
            _warn(f"nothing was trained or logged, so the run dir {run_dir.path} was removed")
        elif not isinstance(exc, Interrupted):
            _warn(f"the run dir {run_dir.path} is kept as it is")
        raise
    finally:
        run_dir.release()


def _resume(args: argparse.Namespace, plugins: Plugins, dist: Dist) -> int:
    from pipeforge import checkpoint

    run_dir = RunDir(args.resume)
    saved_path = args.resume / "recipe.toml"
    if not saved_path.is_file():
        raise UsageError(f"{args.resume} is not a pipeforge run dir (no recipe.toml)")
    saved = resolved(load_recipe(saved_path, plugins.registry), plugins.registry)
    recipe = load_recipe(args.recipe or saved_path, plugins.registry, args.overrides)
    wanted = resolved(recipe, plugins.registry)
    changes = differences(saved, wanted)
    refused = [c for c in changes if c[0] not in RESUMABLE_CHANGES]
    if refused:
        lines = "\n".join(f"  {key}: {old!r} -> {new!r}" for key, old, new in refused)
        raise UsageError(
            f"cannot resume {args.resume} with a different recipe:\n{lines}\n"
            f"only {', '.join(RESUMABLE_CHANGES)} may change on resume; start a new run instead"
        )
    # Rank 0 picks the checkpoint; every rank loads the same file.
    found = checkpoint.latest_valid(args.resume / "checkpoints") if dist.is_main else None
    path = dist.share(str(found[0]) if found else None)
    saved = found[1] if found else (checkpoint.load(Path(path)) if path else None)
    if not dist.is_main:
        return _fit(args, recipe, plugins, run_dir, saved, dist)
    with run_dir.lock():
        if changes:
            run_dir.rewrite_recipe(wanted, _recipe_header(args, run_dir.path))
        run_dir.rewrite_metrics(saved.history if saved else [])
        if args.quiet:
            pass
        elif saved is None:
            err.print(Text(f"{args.resume} has no checkpoint yet: starting it from the beginning"))
        else:
            err.print(Text(f"resuming {args.resume} from {Path(path).name} "
                           f"(epoch {saved.epochs_done}, step {saved.global_step})"))
        return _fit(args, recipe, plugins, run_dir, saved, dist)


def _fit(args: argparse.Namespace, recipe: Recipe, plugins: Plugins, run_dir: RunDir,
         resume: Checkpoint | None, dist: Dist) -> int:
    from pipeforge.console import ConsoleReporter
    from pipeforge.engine import StopRequest, fit  # torch is imported from here on

    # Other ranks of a data-parallel job stay silent unless they fail.
    loud = dist.is_main and not args.quiet
    reporter = ConsoleReporter(err, progress=err.is_terminal and loud, lines=loud)
    stop = StopRequest()
    with _signals_request(stop):
        state = fit(recipe, plugins, run_dir, extra=[reporter] if dist.is_main else [],
                    stop=stop, resume=resume, dist=dist)
    if dist.is_main:
        if loud and state.history:
            out.print(Text(f"done: {_summary(state.history[-1])}"))
        out.print(Text(f"run dir: {run_dir.path}"))
    return 0


def _join(recipe: Recipe) -> Dist:
    """This process's rank; joins the process group when torchrun started several."""
    dist = Dist.from_env()
    if dist.enabled and recipe.trainer.strategy == "none":
        raise UsageError('trainer.strategy is "none" but this was launched with several processes')
    if not dist.enabled and recipe.trainer.strategy == "ddp":
        raise UsageError('trainer.strategy is "ddp": launch with --nproc-per-node N (or torchrun)')
    if dist.enabled:
        import torch

        cuda = recipe.trainer.device != "cpu" and torch.cuda.is_available()
        dist.start("cuda" if cuda else "cpu", recipe.trainer.dist_timeout_s)
    return dist


def _launch(args: argparse.Namespace, recipe: Recipe) -> int:
    """`run --nproc-per-node N`: the same command under torch's launcher, run dir fixed first."""
    from pipeforge.distributed import launch

    argv = ["run"]
    if args.resume is not None:
        argv += ["--resume", str(args.resume)]
    if args.recipe is not None:
        argv.append(str(args.recipe))
    if args.resume is None:
        argv += ["--run-dir", str(args.run_dir or default_path(recipe.run.name))]
    for override in args.overrides:
        argv += ["--set", override]
    if args.quiet:
        argv.append("--quiet")
    return launch(args.nproc_per_node, argv)


@contextlib.contextmanager
def _signals_request(stop: Any) -> Iterator[None]:
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


def differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for every value that differs between two recipes."""
    found = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        path = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            found += differences(a, b, f"{path}.")
        elif a != b:
            found.append((path, a, b))
    return found


def _recipe_header(args: argparse.Namespace, run_dir: Path) -> str:
    sets = "".join(f" --set {o}" for o in args.overrides)
    return (
        f"Resolved by pipeforge {__version__} from {args.recipe or args.resume}{sets}, defaults filled in.\n"
        f"Run it again with: pipeforge run {run_dir / 'recipe.toml'}"
    )


def _environment(recipe: Recipe, plugins: Plugins, dist: Dist) -> dict[str, Any]:
    import torch

    return {
        "pipeforge": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "seed": recipe.run.seed,
        "world_size": dist.world,
        "command": sys.argv,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "plugins": [
            {"name": p.name, "distribution": p.distribution, "version": p.version, "status": p.status}
            for p in plugins.registry.plugins
        ],
    }
