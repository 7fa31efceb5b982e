"""Train one recipe the way `pipeforge run --quiet` does, and time `fit` from inside it.

The same calls as `pipeforge.cli.cmd_run`: discover plugins, load and validate the recipe with
its `--set` overrides, claim and lock a run dir, write the resolved recipe, then
`pipeforge.engine.fit` with the quiet console reporter — plus one more plugin object, `FitTimer`,
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
from pipeforge.plugins import discover
from pipeforge.recipe import load_recipe, resolved
from pipeforge.rundir import RunDir


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

    plugins = discover()
    recipe = load_recipe(args.recipe, plugins.registry, args.overrides)
    with RunDir.claim(args.run_dir, recipe.run.name) as run_dir:
        run_dir.write_recipe(resolved(recipe, plugins.registry), "written by benchmarks/pipeforge_driver.py")
        from pipeforge.console import ConsoleReporter
        from pipeforge.engine import StopRequest, fit  # torch is imported from here on

        timer = FitTimer()
        reporter = ConsoleReporter(Console(stderr=True), progress=False, lines=False)  # as --quiet
        state = fit(recipe, plugins, run_dir, extra=[reporter, timer], stop=StopRequest())
    print("BENCH_RESULT " + json.dumps(summary(state, timer)))


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
