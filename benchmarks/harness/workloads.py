"""The four workloads, the contenders of each, and the generated data they train on.

A *contender* is one way of training a workload: a hand-written reference script
(`benchmarks/reference/`) or pipeforge with a benchmark recipe (`benchmarks/recipes/`). A
reference child reports both its in-process training time and, measured from outside, its
whole-process wall time and peak RSS. pipeforge needs two children per round: the driver
(`benchmarks/pipeforge_driver.py`, the engine timed from inside) and `pipeforge run --quiet`
(timed and measured from outside, start to exit).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

BENCH = Path(__file__).resolve().parents[1]
ROOT = BENCH.parent
REFERENCE = BENCH / "reference"
RECIPES = BENCH / "recipes"
DRIVER = BENCH / "pipeforge_driver.py"

WORKLOADS = {
    "W1": "simple linear (seed 000)",
    "W2": "popularity MLP + per-step TensorBoard (seed 002)",
    "W3": "FashionMNIST MLP (seed 001)",
    "W4": "ResNet-18 on CIFAR-format data (seed 004)",
}


@dataclass(frozen=True)
class Sizes:
    """How big each workload is; `full` is the benchmark, `quick` a smoke test of the suite."""

    w1_epochs: int
    w1_train: int
    w1_val: int
    w2_epochs: int
    w2_train: int
    w2_test: int
    w3_epochs: int
    w3_train: int
    w3_test: int
    w4_epochs: int
    w4_train: int
    w4_test: int


FULL = Sizes(20, 1000, 100, 10, 800, 200, 2, 12000, 2000, 1, 2048, 512)
QUICK = Sizes(2, 160, 32, 2, 160, 64, 1, 640, 128, 1, 256, 64)


@dataclass(frozen=True)
class Contender:
    """One way of training a workload.

    `args` are the reference script's arguments, or pipeforge's `--set` overrides; `{run}` in
    them becomes the child's fresh run dir. `baseline` names the contender that ratios are
    taken against (a reference has none). `whole_process`: also run `pipeforge run` each
    round (wall time, peak RSS); off where only the in-process time is of interest.
    """

    key: str
    workload: str
    label: str
    script: Path | None = None  # a reference script
    recipe: Path | None = None  # a pipeforge recipe
    args: tuple[str, ...] = ()
    baseline: str | None = None
    whole_process: bool = True
    pythonpath: str | None = None  # a candidate pipeforge source tree (see `with_candidates`)

    @property
    def is_reference(self) -> bool:
        return self.script is not None


@dataclass(frozen=True)
class Data:
    """Where the generated datasets are: roots for `--set dataset.root=` and `--data`."""

    fashion: Path
    cifar: Path


def prepare_data(directory: Path, sizes: Sizes, needed: set[str]) -> Data:
    """Write the generated FashionMNIST idx files and CIFAR-10 pickles the workloads need.

    Uses the tests' generators (`tests/datagen.py`): the real on-disk formats, learnable
    classes, deterministic from the seed.
    """
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        import datagen
    finally:
        sys.path.pop(0)
    data = Data(fashion=directory / "fashion", cifar=directory / "cifar")
    if "W3" in needed:
        datagen.write_fashion_mnist(data.fashion, n_train=sizes.w3_train, n_test=sizes.w3_test, seed=0)
    if "W4" in needed:
        datagen.write_cifar10(data.cifar, n_train=sizes.w4_train, n_test=sizes.w4_test, seed=0)
    return data


def contenders(sizes: Sizes, data: Data, quick: bool) -> list[Contender]:
    """Every contender of every workload, references first within a workload."""
    # --quick keeps the smoke test under a minute: `pipeforge run` on W2 only (the workload with
    # a wall-time target), and no variant that adds no code path (TensorBoard runs in W2; the
    # W4 fp32 runs are the bf16 ones without two flags).
    whole = (lambda workload: workload == "W2") if quick else (lambda workload: True)
    skipped_when_quick = {"W1/pipeforge+tb", "W1/pipeforge-ckpt-epoch", "W2/pipeforge-ckpt-epoch", "W4/reference",
                          "W4/pipeforge", "W4/pipeforge-bf16", "W4/pipeforge-cl", "W4/pipeforge-w0"}
    every = _in_memory(sizes, whole) + _from_files(sizes, data, whole)
    return [c for c in every if not (quick and c.key in skipped_when_quick)]


# The reference never checkpoints; pipeforge by default checkpoints every 5 minutes and after
# the last epoch, so these runs of a second write one. A checkpoint after every epoch (the
# default before checkpoint_every_s) prices a fixed cadence on epochs of milliseconds.
CHECKPOINT_EVERY_EPOCH = ("--set", "trainer.checkpoint_every_epochs=1")


def _in_memory(s: Sizes, whole: Callable[[str], bool]) -> list[Contender]:
    """W1 and W2: data drawn in memory from the seed."""
    return [
        Contender(
            "W1/reference", "W1", "reference", script=REFERENCE / "w1_simple.py",
            args=("--epochs", str(s.w1_epochs), "--n-train", str(s.w1_train), "--n-val", str(s.w1_val)),
        ),
        Contender(
            "W1/pipeforge", "W1", "pipeforge (no callbacks)", recipe=RECIPES / "w1_simple.toml",
            args=_sets(**{"trainer.epochs": s.w1_epochs, "dataset.n_train": s.w1_train, "dataset.n_val": s.w1_val}),
            baseline="W1/reference", whole_process=whole("W1"),
        ),
        Contender(
            "W1/pipeforge+tb", "W1", "pipeforge + TensorBoard every step", recipe=RECIPES / "w1_simple.toml",
            args=_sets(**{"trainer.epochs": s.w1_epochs, "dataset.n_train": s.w1_train, "dataset.n_val": s.w1_val})
            + ("--set", 'callbacks=[{name="tensorboard"}]'),
            baseline="W1/reference", whole_process=False,  # prices the logger; the reference does not log
        ),
        Contender(
            "W1/pipeforge-ckpt-epoch", "W1", "pipeforge, checkpoint_every_epochs=1", recipe=RECIPES / "w1_simple.toml",
            args=_sets(**{"trainer.epochs": s.w1_epochs, "dataset.n_train": s.w1_train, "dataset.n_val": s.w1_val})
            + CHECKPOINT_EVERY_EPOCH, baseline="W1/reference", whole_process=False,
        ),
        Contender(
            "W2/reference", "W2", "reference (TensorBoard every step)", script=REFERENCE / "w2_popularity.py",
            args=("--epochs", str(s.w2_epochs), "--n-train", str(s.w2_train), "--n-test", str(s.w2_test),
                  "--log-dir", "{run}/tensorboard"),
        ),
        Contender(
            "W2/pipeforge", "W2", "pipeforge (TensorBoard every step)", recipe=RECIPES / "w2_popularity.toml",
            args=_sets(**{"trainer.epochs": s.w2_epochs, "dataset.n_train": s.w2_train, "dataset.n_test": s.w2_test}),
            baseline="W2/reference", whole_process=whole("W2"),
        ),
        Contender(
            "W2/pipeforge-ckpt-epoch", "W2", "pipeforge, checkpoint_every_epochs=1", recipe=RECIPES / "w2_popularity.toml",
            args=_sets(**{"trainer.epochs": s.w2_epochs, "dataset.n_train": s.w2_train, "dataset.n_test": s.w2_test})
            + CHECKPOINT_EVERY_EPOCH, baseline="W2/reference", whole_process=False,
        ),
    ]


def _from_files(s: Sizes, data: Data, whole: Callable[[str], bool]) -> list[Contender]:
    """W3 and W4: data read from the generated files."""
    bf16_cl = ("--set", "trainer.precision=bf16", "--set", "trainer.channels_last=true")
    return [
        Contender(
            "W3/reference", "W3", "reference", script=REFERENCE / "w3_fashion.py",
            args=("--data", str(data.fashion), "--epochs", str(s.w3_epochs)),
        ),
        Contender(
            "W3/pipeforge", "W3", "pipeforge", recipe=RECIPES / "w3_fashion.toml",
            args=_sets(**{"trainer.epochs": s.w3_epochs, "dataset.root": str(data.fashion)}),
            baseline="W3/reference", whole_process=whole("W3"),
        ),
        Contender(
            "W4/reference", "W4", "reference fp32", script=REFERENCE / "w4_resnet18.py",
            args=("--data", str(data.cifar), "--epochs", str(s.w4_epochs)),
        ),
        Contender(
            "W4/reference-bf16-cl", "W4", "reference bf16 + channels_last", script=REFERENCE / "w4_resnet18.py",
            args=("--data", str(data.cifar), "--epochs", str(s.w4_epochs), "--bf16", "--channels-last"),
        ),
        Contender(
            "W4/pipeforge", "W4", "pipeforge fp32", recipe=RECIPES / "w4_resnet18.toml",
            args=_sets(**{"trainer.epochs": s.w4_epochs, "dataset.root": str(data.cifar)}),
            baseline="W4/reference", whole_process=whole("W4"),
        ),
        Contender(
            "W4/pipeforge-bf16-cl", "W4", "pipeforge bf16 + channels_last", recipe=RECIPES / "w4_resnet18.toml",
            args=_sets(**{"trainer.epochs": s.w4_epochs, "dataset.root": str(data.cifar)}) + bf16_cl,
            baseline="W4/reference-bf16-cl", whole_process=whole("W4"),
        ),
        # pipeforge's default `num_workers = "auto"` forks DataLoader workers (one here, on 2
        # CPUs); the reference loads in its one process. The same without workers:
        Contender(
            "W4/pipeforge-w0", "W4", "pipeforge fp32, num_workers=0", recipe=RECIPES / "w4_resnet18.toml",
            args=_sets(**{"trainer.epochs": s.w4_epochs, "dataset.root": str(data.cifar)})
            + ("--set", "trainer.num_workers=0"),
            baseline="W4/reference", whole_process=whole("W4"),
        ),
        # Each knob alone, to see which one pays (engine timing only).
        Contender(
            "W4/pipeforge-bf16", "W4", "pipeforge bf16 only", recipe=RECIPES / "w4_resnet18.toml",
            args=_sets(**{"trainer.epochs": s.w4_epochs, "dataset.root": str(data.cifar)}) + bf16_cl[:2],
            baseline="W4/reference", whole_process=False,
        ),
        Contender(
            "W4/pipeforge-cl", "W4", "pipeforge channels_last only", recipe=RECIPES / "w4_resnet18.toml",
            args=_sets(**{"trainer.epochs": s.w4_epochs, "dataset.root": str(data.cifar)}) + bf16_cl[2:],
            baseline="W4/reference", whole_process=False,
        ),
    ]


def with_candidates(chosen: list[Contender], candidates: dict[str, Path],
                    overrides: dict[str, list[str]]) -> list[Contender]:
    """`chosen`, plus a copy of every pipeforge contender per candidate.

    A candidate is a changed copy of pipeforge's `src/` (e.g. a proposal from PROPOSALS.md),
    maybe with extra `--set` overrides (e.g. a recipe key the proposal adds); its contenders
    run with that tree first on PYTHONPATH, in the same rounds as the others, so the
    proposal's effect is measured against the same references under the same load.
    """
    out = list(chosen)
    for name, src in candidates.items():
        sets = tuple(a for o in overrides.get(name, []) for a in ("--set", o))
        for c in chosen:
            if not c.is_reference:
                out.append(replace(c, key=f"{c.key}@{name}", label=f"{c.label} [{name}]",
                                   pythonpath=str(src), args=c.args + sets))
    order = list(WORKLOADS)
    return sorted(out, key=lambda c: order.index(c.workload))  # stable: keeps the order within a workload


def _sets(**values: object) -> tuple[str, ...]:
    """`--set key=value` pairs; strings are quoted as TOML strings."""
    out: list[str] = []
    for key, value in values.items():
        text = f'"{value}"' if isinstance(value, str) else str(value)
        out += ["--set", f"{key}={text}"]
    return tuple(out)
