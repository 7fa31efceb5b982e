"""Per-step framework overhead on W1's model, measured in one process, variants interleaved.

Times the training steps of W1 (the seed's SimpleModel, one Linear(10, 2) inside a Module, as
the reference script and the `simple.linear` component build it; random vectors, batch 16,
shuffled, drop_last) several ways, each `--repeats` times, taking turns:

- `hand loop`: the fewest Python lines that train on the same in-memory tensors, one
  `index_select` of a `randperm` slice per batch: the reference point;
- `pipeforge.engine.fit` with no callbacks, with the quiet console reporter (what
  `pipeforge run --quiet` registers), and with TensorBoard logging the loss every step;
- `reference style`: the seed's DataLoader over a map-style Dataset (per-item `__getitem__`
  and collate), as benchmarks/reference/w1_simple.py trains.

Inside `fit`, a `StepTimer` plugin reads the clock at `on_epoch_start` and at the epoch's last
`on_batch_end`, so the per-step figure covers only the training steps (no evaluation, no
checkpoint), through the public hooks. The timer is itself one `on_batch_end` implementation;
its cost is the "1 no-op implementation" row of the hook-call table.

Then the phases of an epoch of W1 and W2 as the suite runs them (training steps, evaluation,
recording metrics and writing the epoch's checkpoint), timed the same way.

Also the cost of one pluggy hook call, `hook.on_batch_end(...)`, with zero implementations (as
after discovery), one no-op implementation and the quiet reporter, next to a plain Python call
with the same keyword arguments. Prints `BENCH_RESULT {json}`: medians in µs/step and ns/call.

    python benchmarks/overhead.py [--steps 1000] [--repeats 5] [--calls 100000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
from rich.console import Console
from torch.utils.data import DataLoader, Dataset

import pipeforge
from pipeforge import hookimpl
from pipeforge.console import ConsoleReporter
from pipeforge.plugins import Plugins, discover
from pipeforge.recipe import load_recipe

RECIPE = Path(__file__).resolve().parent / "recipes" / "w1_simple.toml"
BATCH = 16
EPOCHS = 3  # per timed fit; the first epoch is a warm-up


class SimpleModel(torch.nn.Module):
    """The seed's model, as benchmarks/reference/w1_simple.py and `simple.linear` build it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(10, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class StepTimer:
    """Per-epoch wall time of the training steps alone, as µs per step."""

    def __init__(self) -> None:
        self.us_per_step: list[float] = []
        self._last = -1
        self._started = 0.0

    @hookimpl(trylast=True)
    def on_epoch_start(self, steps: int) -> None:
        self._last = steps - 1
        self._started = time.perf_counter()

    @hookimpl(trylast=True)  # after every other implementation: they are part of the step
    def on_batch_end(self, batch_index: int) -> None:
        if batch_index == self._last:
            self.us_per_step.append((time.perf_counter() - self._started) / (self._last + 1) * 1e6)


class PhaseTimer:
    """Per epoch: training steps, evaluation, then recording + checkpointing (ms, medians)."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, float, float]] = []
        self.steps = 0
        self._last = -1
        self._marks = [0.0, 0.0, 0.0]

    @hookimpl(trylast=True)
    def on_epoch_start(self, steps: int) -> None:
        self.steps = steps
        self._last = steps - 1
        self._marks = [time.perf_counter()] * 3

    @hookimpl(trylast=True)
    def on_batch_end(self, batch_index: int) -> None:
        if batch_index == self._last:
            self._marks[1] = self._marks[2] = time.perf_counter()

    @hookimpl(trylast=True)
    def on_validation_end(self) -> None:
        self._marks[2] = time.perf_counter()

    @hookimpl(tryfirst=True)  # before the callbacks' own epoch-end work (e.g. TensorBoard's flush)
    def on_epoch_end(self) -> None:
        start, trained, evaluated = self._marks
        self.rows.append((trained - start, evaluated - trained, time.perf_counter() - evaluated))


class NoOp:
    @hookimpl
    def on_batch_end(self, state: Any, batch_index: int, loss: Any, batch_size: int) -> None:
        pass


class PerItem(Dataset):
    """The reference's Dataset: one `__getitem__` per sample, labels of shape (1,)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index], self.y[index : index + 1]


def quiet_reporter() -> ConsoleReporter:
    return ConsoleReporter(Console(stderr=True), progress=False, lines=False)


class Bench:
    """W1 with `steps` steps per epoch, and the ways of training it that are timed."""

    def __init__(self, workdir: Path, steps: int) -> None:
        self.workdir = workdir
        self.plugins = discover()
        self.n_train = steps * BATCH
        self.runs = 0
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(self.n_train, 10, generator=generator)
        self.y = torch.randint(0, 2, (self.n_train,), generator=generator)

    def fit(self, callbacks: str, extra: Callable[[], list[Any]] = list) -> Callable[[], list[float]]:
        """A pipeforge run of the W1 recipe (`callbacks` is a TOML array) timed by StepTimer."""
        overrides = [f"dataset.n_train={self.n_train}", "dataset.n_val=16", f"trainer.epochs={EPOCHS}",
                     "trainer.eval_splits=[]", f"callbacks={callbacks}"]
        recipe = load_recipe(RECIPE, self.plugins.registry, overrides)

        def run() -> list[float]:
            self.runs += 1
            timer = StepTimer()
            pipeforge.run(recipe, run_dir=self.workdir / f"run-{self.runs}", callbacks=[*extra(), timer],
                          plugins=self.plugins)
            return timer.us_per_step[1:]

        return run

    def hand_loop(self) -> list[float]:
        torch.manual_seed(0)
        model = SimpleModel()
        loss_fn = torch.nn.CrossEntropyLoss()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        order = torch.Generator().manual_seed(0)
        steps = self.n_train // BATCH
        results = []
        for _ in range(EPOCHS):
            started = time.perf_counter()
            model.train()
            permutation = torch.randperm(self.n_train, generator=order)
            for start in range(0, steps * BATCH, BATCH):
                index = permutation[start : start + BATCH]
                inputs, targets = self.x.index_select(0, index), self.y.index_select(0, index)
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model(inputs), targets)
                loss.backward()
                optimizer.step()
            results.append((time.perf_counter() - started) / steps * 1e6)
        return results[1:]

    def reference_loop(self) -> list[float]:
        torch.manual_seed(0)
        model = SimpleModel()
        criterion = torch.nn.CrossEntropyLoss()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        loader = DataLoader(PerItem(self.x, self.y), batch_size=BATCH, shuffle=True, drop_last=True)
        results = []
        for _ in range(EPOCHS):
            started = time.perf_counter()
            model.train()
            for x, y in loader:
                optimizer.zero_grad()
                loss = criterion(model(x), y.squeeze())
                loss.backward()
                optimizer.step()
            results.append((time.perf_counter() - started) / len(loader) * 1e6)
        return results[1:]


def epoch_phases(bench: Bench, recipes: dict[str, Path], repeats: int) -> dict[str, dict[str, float]]:
    """Median ms per epoch of each phase, for the benchmark recipes as they are run."""
    out: dict[str, dict[str, float]] = {}
    for name, path in recipes.items():
        recipe = load_recipe(path, bench.plugins.registry)
        rows: list[tuple[float, float, float]] = []
        steps = 0
        for _ in range(repeats):
            bench.runs += 1
            timer = PhaseTimer()
            pipeforge.run(recipe, run_dir=bench.workdir / f"run-{bench.runs}", callbacks=[quiet_reporter(), timer],
                          plugins=bench.plugins)
            rows += timer.rows[1:]  # the first epoch warms up
            steps = timer.steps
        phases = ("training steps", "evaluation", "metrics.jsonl + checkpoint (+ best.pt)")
        out[name] = {phase: statistics.median(r[i] for r in rows) * 1e3 for i, phase in enumerate(phases)}
        out[name]["steps per epoch"] = steps
    return out


def time_steps(variants: dict[str, Callable[[], list[float]]], repeats: int) -> dict[str, float]:
    """Median µs per step of each variant over `repeats` turns (after one warm-up turn)."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for run in variants.values():
        run()
    for _ in range(repeats):
        for name, run in variants.items():
            times[name] += run()
    return {name: statistics.median(values) for name, values in times.items()}


def time_calls(plugins: Plugins, count: int, repeats: int) -> dict[str, float]:
    """Median ns per `hook.on_batch_end(...)` call, by the implementations registered."""
    hook, manager = plugins.manager.hook, plugins.manager
    state, loss = object(), torch.zeros(())

    def plain(state: Any, batch_index: int, loss: Any, batch_size: int) -> None:
        pass

    def call_plain() -> None:
        plain(state=state, batch_index=1, loss=loss, batch_size=BATCH)

    def call_hook() -> None:
        hook.on_batch_end(state=state, batch_index=1, loss=loss, batch_size=BATCH)

    if hook.on_batch_end.get_hookimpls():
        raise RuntimeError("expected no on_batch_end implementations right after discovery")
    cases: list[tuple[str, Callable[[], None], Any]] = [
        ("plain Python call, same 4 kwargs", call_plain, None),
        ("hook.on_batch_end, 0 implementations", call_hook, None),
        ("hook.on_batch_end, 1 no-op implementation", call_hook, NoOp()),
        ("hook.on_batch_end, quiet console reporter", call_hook, quiet_reporter()),
    ]
    times: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    for _ in range(repeats):
        for name, call, plugin in cases:
            if plugin is not None:
                manager.register(plugin)
            try:
                started = time.perf_counter()
                for _ in range(count):
                    call()
                times[name].append((time.perf_counter() - started) / count * 1e9)
            finally:
                if plugin is not None:
                    manager.unregister(plugin)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="training steps per epoch")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=100_000, help="hook calls per timing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pipeforge-overhead-") as tmp:
        bench = Bench(Path(tmp), args.steps)
        variants = {
            "hand loop, index_select per batch (reference point)": bench.hand_loop,
            "pipeforge fit, no callbacks": bench.fit("[]"),
            "pipeforge fit + quiet console reporter (= pipeforge run --quiet)": bench.fit("[]", lambda: [quiet_reporter()]),
            "pipeforge fit + TensorBoard every step": bench.fit('[{name="tensorboard"}]'),
            "reference style: DataLoader over a Dataset": bench.reference_loop,
        }
        result = {
            "steps_per_epoch": args.steps,
            "step_us": time_steps(variants, args.repeats),
            "call_ns": time_calls(bench.plugins, args.calls, args.repeats),
            "epoch_ms": epoch_phases(bench, {"W1": RECIPE, "W2": RECIPE.with_name("w2_popularity.toml")},
                                     max(1, args.repeats // 2)),
            "threads": torch.get_num_threads(),
        }
    print("BENCH_RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
