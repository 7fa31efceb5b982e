"""The Python API: train, resume, evaluate and predict from a notebook, a script or a test.

The `pipeforge` command is a thin layer over these functions. They raise pipeforge's typed
errors (`RecipeError`, `UsageError`, `CheckpointError`, …), never call `sys.exit`, install no
signal handlers and print nothing: messages for a person (a resumed run, a removed run dir)
go to the `pipeforge` logger. Importing this module does not import torch; training does.

    import pipeforge
    result = pipeforge.run("recipes/quickstart.toml", overrides=["trainer.epochs=2"])
    result.run_dir, result.history[-1]["val_accuracy"]
    pipeforge.resume(result.run_dir, overrides=["trainer.epochs=4"])
"""

from __future__ import annotations

import copy
import glob
import json
import logging
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from pipeforge.version import __version__
from pipeforge.context import RunState, StopRequest
from pipeforge.distributed import Dist
from pipeforge.errors import Interrupted, TimeLimitReached, UsageError, shorten
from pipeforge.plugins import Plugins, discover
from pipeforge.recipe import Recipe, apply_overrides, load_recipe, resolved, validate_recipe
from pipeforge.rundir import RunDir

if TYPE_CHECKING:
    from pipeforge.checkpoint import Checkpoint
    from pipeforge.inference import Evaluation, Prediction

log = logging.getLogger("pipeforge")

# Recipe values that may differ when a run is resumed: they change how long or where it runs,
# not what it computes.
RESUMABLE_CHANGES = (
    "trainer.epochs", "trainer.num_workers", "trainer.keep_checkpoints",
    "trainer.checkpoint_every_s", "trainer.checkpoint_every_steps", "trainer.checkpoint_every_epochs", "trainer.device",
    "trainer.max_time", "trainer.threads",
)

@dataclass
class Result:
    """A finished run: where it is, one row per epoch as in metrics.jsonl, and its live state
    (`state.model` is the trained module)."""

    run_dir: Path
    history: list[dict[str, Any]]
    state: RunState

    @property
    def stop_reason(self) -> str | None:
        """Why a callback stopped the run early (`state.request_stop`), or None."""
        return self.state.stop_reason

    @property
    def metrics(self) -> dict[str, Any]:
        """The last epoch's row of metrics.jsonl (empty if no epoch ran)."""
        return self.history[-1] if self.history else {}


def run(recipe: str | Path | Mapping[str, Any] | Recipe, *, overrides: Sequence[str] = (),
        run_dir: str | Path | None = None, callbacks: Sequence[object] = (),
        stop: StopRequest | None = None, plugins: Plugins | None = None) -> Result:
    """Train a recipe into a new run dir and return the result.

    `recipe` is a TOML file, a dict shaped like one, or a validated `Recipe`; `overrides` are
    `--set` strings (`"optimizer.lr=0.1"`). `run_dir` must be new or empty (default
    `runs/<name>-<timestamp>`). `callbacks` are extra plugin objects with hook implementations
    for this run only. Set `stop.signal` (e.g. from a signal handler) to checkpoint and raise
    `Interrupted`. Under torchrun, joins the process group and trains data-parallel.
    """
    plugins = plugins or _discover()
    source = str(recipe) if isinstance(recipe, (str, Path)) else "a recipe given in Python"
    recipe = _recipe(recipe, plugins, overrides)
    with _process_group(recipe) as dist:
        if _elastic_restart():
            # torchrun restarted the job after a process failed (--max-restarts): continue the
            # run dir its first attempt claimed, from the newest checkpoint, on every rank.
            previous = dist.share(_previous_attempt(run_dir, recipe) if dist.is_main else None)
            if previous is not None:
                saved = load_recipe(Path(previous) / "recipe.toml", plugins.registry)
                return _continue(Path(previous), saved, recipe, source, overrides, plugins, dist, callbacks, stop)
        if not dist.is_main:
            path = dist.share(None)
            if path is None:
                raise UsageError("rank 0 could not claim the run dir")
            return _fit(recipe, plugins, RunDir(Path(path)), None, dist, callbacks, stop)
        try:
            claimed = RunDir.claim(Path(run_dir) if run_dir is not None else None, recipe.run.name)
        except UsageError:
            dist.share(None)
            raise
        dist.share(str(claimed.path))
        try:  # claim() locked the run dir: nothing of another process is ever discarded here
            claimed.write_recipe(resolved(recipe), _header(source, overrides, claimed.path))
            claimed.write_env(_environment(recipe, plugins, dist))
            result = _fit(recipe, plugins, claimed, None, dist, callbacks, stop)
            _record_end(claimed, None)
            return result
        except BaseException as exc:
            if claimed.discard_if_untrained():
                log.warning("nothing was trained or logged, so the run dir %s was removed", claimed.path)
            else:
                _record_end(claimed, exc)
                if not isinstance(exc, Interrupted):
                    log.warning("the run dir %s is kept as it is", claimed.path)
            raise
        finally:
            claimed.release()


def resume(run_dir: str | Path, *, overrides: Sequence[str] = (), recipe: str | Path | None = None,
           callbacks: Sequence[object] = (), stop: StopRequest | None = None,
           plugins: Plugins | None = None) -> Result:
    """Continue `run_dir` from its newest checkpoint and return the result.

    The recipe is the run's own `recipe.toml` (or `recipe`) with `overrides`; only
    `RESUMABLE_CHANGES` may differ from what the run was started with (`UsageError` showing the
    difference otherwise). A checkpoint that cannot be read is never skipped or overwritten:
    `CheckpointError` names it.
    """
    run_dir = Path(run_dir)
    plugins = plugins or _discover()
    saved_path = run_dir / "recipe.toml"
    if not saved_path.is_file():
        raise UsageError(f"{run_dir} is not a pipeforge run dir (no recipe.toml)")
    saved_recipe = load_recipe(saved_path, plugins.registry)
    wanted_recipe = saved_recipe
    if recipe is not None or overrides:
        wanted_recipe = load_recipe(Path(recipe) if recipe else saved_path, plugins.registry, list(overrides))
    with _process_group(wanted_recipe) as dist:
        return _continue(run_dir, saved_recipe, wanted_recipe, str(recipe or saved_path), overrides, plugins, dist,
                         callbacks, stop)


def _continue(run_dir: Path, saved_recipe: Recipe, wanted_recipe: Recipe, source: str, overrides: Sequence[str],
              plugins: Plugins, dist: Dist, callbacks: Sequence[object], stop: StopRequest | None) -> Result:
    """Train `run_dir` on from its newest checkpoint (or from the start if it has none yet),
    with `wanted_recipe`, which may differ from the run's own only in `RESUMABLE_CHANGES`."""
    from pipeforge import checkpoint

    saved, wanted = resolved(saved_recipe), resolved(wanted_recipe)
    changes = differences(saved, wanted)
    refused = [c for c in changes if c[0] not in RESUMABLE_CHANGES]
    if refused:
        lines = "\n".join(f"  {key}: {old!r} -> {new!r}" for key, old, new in refused)
        raise UsageError(
            f"cannot resume {run_dir} with a different recipe:\n{lines}\n"
            f"only {', '.join(RESUMABLE_CHANGES)} may change on resume; start a new run instead"
        )
    # Rank 0 picks the checkpoint; every rank loads the same file.
    found = checkpoint.resumable(run_dir / "checkpoints") if dist.is_main else None
    path = dist.share(str(found[0]) if found else None)
    latest: Checkpoint | None = found[1] if found else (checkpoint.load(Path(path)) if path else None)
    target = RunDir(run_dir)
    if not dist.is_main:
        return _fit(wanted_recipe, plugins, target, latest, dist, callbacks, stop)
    with target.lock():
        _set_ended(target, None)  # until this session ends (see `_record_end`)
        if changes:
            target.rewrite_recipe(wanted, _header(source, overrides, run_dir))
        target.rewrite_metrics(latest.history if latest else [])
        if latest is None:
            log.info("%s has no checkpoint yet: starting it from the beginning", run_dir)
        else:
            log.info("resuming %s from %s (epoch %d, step %d)", run_dir, Path(path).name,
                     latest.epochs_done, latest.global_step)
        try:
            result = _fit(wanted_recipe, plugins, target, latest, dist, callbacks, stop)
        except BaseException as exc:
            _record_end(target, exc)
            raise
        _record_end(target, None)
        return result


def _elastic_restart() -> bool:
    """Whether torchrun restarted this job after a failure (`--max-restarts`)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0


def _previous_attempt(run_dir: str | Path | None, recipe: Recipe) -> str | None:
    """The run dir an earlier attempt of this torchrun job claimed (its env.json records the
    job's TORCHELASTIC_RUN_ID): `run_dir` if given, else the newest `runs/<name>-*`."""
    job = os.environ.get("TORCHELASTIC_RUN_ID")
    if not job:
        return None
    candidates = [Path(run_dir)] if run_dir is not None else sorted(
        Path("runs").glob(f"{glob.escape(recipe.run.name)}-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in candidates:
        try:
            env = json.loads((path / "env.json").read_text())
        except (OSError, ValueError):
            continue
        if isinstance(env, dict) and env.get("elastic_run_id") == job and (path / "recipe.toml").is_file():
            return str(path)
    return None


def evaluate(run_dir: str | Path, *, checkpoint: str | None = None, splits: Sequence[str] | None = None,
             plugins: Plugins | None = None) -> Evaluation:
    """Loss and metrics of a run's model on its dataset's splits (default: all but train).
    `checkpoint`: None (model.pt), "last", "best" or a file path."""
    from pipeforge.inference import evaluate_run

    return evaluate_run(Path(run_dir), plugins or _discover(), choice=checkpoint,
                        splits=list(splits) if splits else None)


def predict(run_dir: str | Path, inputs: Sequence[str], *, checkpoint: str | None = None,
            plugins: Plugins | None = None) -> list[Prediction]:
    """Classify raw inputs (read by the dataset component's input reader, `Component.read_inputs`), one per sample."""
    from pipeforge.inference import predict as predict_run

    return predict_run(Path(run_dir), plugins or _discover(), list(inputs), choice=checkpoint)


# ------------------------------------------------------------------------------ helpers


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


def _discover() -> Plugins:
    plugins = discover()
    for plugin in plugins.broken:
        log.warning("plugin '%s' from %s %s is %s: %s", plugin.name, plugin.distribution, plugin.version,
                    plugin.status, plugin.error)
    return plugins


def _recipe(recipe: Any, plugins: Plugins, overrides: Sequence[str]) -> Recipe:
    if isinstance(recipe, Recipe) and recipe.is_bound and not overrides:
        return recipe
    if isinstance(recipe, (Recipe, Mapping)):
        # A copy: overrides must not change the caller's dict (e.g. a base reused for several runs).
        data = recipe.model_dump(mode="json") if isinstance(recipe, Recipe) else copy.deepcopy(dict(recipe))
        return validate_recipe(apply_overrides(data, list(overrides)), plugins.registry)
    return load_recipe(Path(recipe), plugins.registry, list(overrides))


class _process_group:
    """This process's rank; joins the process group when torchrun started several, and
    leaves it afterwards (after a clean finish, once every rank is done)."""

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self.dist = Dist.from_env()

    def __enter__(self) -> Dist:
        dist, strategy = self.dist, self.recipe.trainer.strategy
        if dist.enabled and strategy == "none":
            raise UsageError('trainer.strategy is "none" but this was launched with several processes')
        if not dist.enabled and strategy == "ddp":
            raise UsageError('trainer.strategy is "ddp": launch with --nproc-per-node N (or torchrun)')
        if dist.enabled:
            import torch

            cuda = self.recipe.trainer.device != "cpu" and torch.cuda.is_available()
            dist.start("cuda" if cuda else "cpu", self.recipe.trainer.dist_timeout_s)
        return dist

    def __exit__(self, kind: Any, *rest: Any) -> None:
        self.dist.stop(clean=kind is None)


def _fit(recipe: Recipe, plugins: Plugins, run_dir: RunDir, resume_from: Checkpoint | None, dist: Dist,
         callbacks: Sequence[object], stop: StopRequest | None) -> Result:
    from pipeforge.engine import fit  # torch is imported from here on

    state = fit(recipe, plugins, run_dir, extra=list(callbacks), stop=stop, resume=resume_from, dist=dist)
    if state.stop_reason is not None and dist.is_main:
        log.info("stopped early after epoch %d (step %d): %s", state.epoch, state.global_step, state.stop_reason)
        run_dir.update_env(stopped={"reason": state.stop_reason, "epoch": state.epoch, "step": state.global_step})
    return Result(run_dir.path, list(state.history), state)


def _record_end(run_dir: RunDir, exc: BaseException | None) -> None:
    """Say in env.json how this session of the run ended, for `pipeforge runs`: `ended` is
    null while it trains (a run killed outright keeps that), then {status, at, error}: status
    "finished", "interrupted" (a signal or `max_time`, with a checkpoint to resume from) or
    "failed". Never raises: the run's own error, if any, is what matters."""
    if exc is None:
        status = "finished"
    else:
        status = "interrupted" if isinstance(exc, (Interrupted, TimeLimitReached, KeyboardInterrupt)) else "failed"
    ended: dict[str, Any] = {"status": status, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if exc is not None:
        ended["error"] = shorten(str(exc).strip() or type(exc).__name__, 300)
    _set_ended(run_dir, ended)


def _set_ended(run_dir: RunDir, ended: dict[str, Any] | None) -> None:
    try:
        run_dir.update_env(ended=ended)
    except (OSError, ValueError) as error:  # a full disk, a damaged env.json
        log.warning("could not record the end of the run in %s: %s", run_dir.path / "env.json", error)


def _header(source: str, overrides: Sequence[str], run_dir: Path) -> str:
    sets = "".join(f" --set {o}" for o in overrides)
    return (
        f"Resolved by pipeforge {__version__} from {source}{sets}, defaults filled in.\n"
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
        "elastic_run_id": os.environ.get("TORCHELASTIC_RUN_ID"),  # a torchrun job's restarts continue this run
        "command": sys.argv,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "ended": None,  # how the run ended, once it has (see `_record_end`)
        "plugins": [
            {"name": p.name, "distribution": p.distribution, "version": p.version, "status": p.status}
            for p in plugins.registry.plugins
        ],
    }
