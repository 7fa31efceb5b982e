"""Train one recipe the way `pipeforge run --quiet` does, and time the loop from inside it.

The same call as `pipeforge run --quiet`: `pipeforge.run` with the quiet console reporter
(for a candidate source tree from before the Python API, the calls `run` made then) — plus
one more plugin object, `FitTimer`,
that reads `perf_counter` when the loop starts (after every other `on_fit_start`, so the
TensorBoard writer is open, as the reference opens its writer before its loop) and when it
ends (before every other `on_fit_end`, so it includes writing model.pt but not closing the
writer). The last stdout line is `BENCH_RESULT {json}` for benchmarks/run.py.

    python benchmarks/pipeforge_driver.py RECIPE --run-dir DIR [--set KEY=VALUE]...
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from pipeforge import RunState, hookimpl


class FitTimer:
    """A plugin object: the wall time between the start and the end of the training loop."""

    def __init__(self) -> None:
        self.started = self.ended = 0.0

    @hookimpl(trylast=True)
    def on_fit_start(self, state: RunState) -> None:
        self.started = time.perf_counter()

    @hookimpl(tryfirst=True)
    def on_fit_end(self, state: RunState) -> None:
        self.ended = time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()

    from pipeforge.console import ConsoleReporter  # torch is imported from here on

    timer = FitTimer()
    reporter = ConsoleReporter(Console(stderr=True), progress=False, lines=False)  # as --quiet
    state = train(args.recipe, args.run_dir, args.overrides, [reporter, timer])
    print("BENCH_RESULT " + json.dumps(summary(state, timer)))


def train(recipe: Path, run_dir: Path, overrides: list[str], callbacks: list[Any]) -> RunState:
    try:
        from pipeforge import run
    except ImportError:  # a candidate source tree from before the Python API
        return train_before_api(recipe, run_dir, overrides, callbacks)
    return run(recipe, overrides=overrides, run_dir=run_dir, callbacks=callbacks).state


def train_before_api(recipe_path: Path, run_dir_path: Path, overrides: list[str], callbacks: list[Any]) -> RunState:
    from pipeforge.engine import StopRequest, fit
    from pipeforge.plugins import discover
    from pipeforge.recipe import load_recipe, resolved
    from pipeforge.rundir import RunDir

    plugins = discover()
    recipe = load_recipe(recipe_path, plugins.registry, overrides)
    run_dir = RunDir.claim(run_dir_path, recipe.run.name)
    with run_dir.lock():
        run_dir.write_recipe(resolved(recipe, plugins.registry), "written by benchmarks/pipeforge_driver.py")
        return fit(recipe, plugins, run_dir, extra=callbacks, stop=StopRequest())


def summary(state: RunState, timer: FitTimer) -> dict[str, Any]:
    import torch

    last = state.history[-1]
    accuracy = next((value for key, value in last.items() if key.endswith("_accuracy")), None)
    trainer = state.recipe.trainer
    per_epoch = len(state.datasets.splits["train"])
    if trainer.drop_last:
        per_epoch -= per_epoch % trainer.batch_size
    return {
        "train_s": timer.ended - timer.started,
        "steps": state.global_step,
        "samples": per_epoch * len(state.history),
        "accuracy": accuracy,
        "threads": torch.get_num_threads(),
    }


if __name__ == "__main__":
    main()
