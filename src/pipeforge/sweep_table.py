"""The `[sweep]` table of a recipe: the values a sweep tries, how many trials run, how many at
once, and the objective that ranks them. Pure pydantic, no torch: it is what `pipeforge schema`
shows and `validate` checks. Turning it into trials is `sweep.py`'s job.

    [sweep]
    monitor = "test_accuracy"     # a metrics.jsonl key; mode: "max" (a loss: "min")
    parallel = 2                  # worker processes
    [sweep.grid]                  # every combination: 2 × 2 = 4 trials
    "optimizer.lr" = [0.01, 0.1]
    "model.hidden" = [16, 32]

or a search (`sampler = "random"`, or `"tpe"` through Optuna) over a space of distributions:

    [sweep]
    trials = 20
    [sweep.space]
    "optimizer.lr" = { log_uniform = [1e-4, 0.1] }
    "model.hidden" = { int = [8, 64] }
    "optimizer.name" = { choice = ["sgd", "adam"] }
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import Field, model_validator

from pipeforge.registry import INT64_MAX, INT64_MIN, FiniteFloat
from pipeforge.sections import Section

# A dotted recipe key, as `--set` takes it (`optimizer.lr`, `metrics.0.top_k`).
KEY_PATTERN = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"
MAX_TRIALS = 100_000
SAMPLERS = ("grid", "random", "tpe")


class Distribution(Section):
    """One key's values in a search: exactly one of `uniform`, `log_uniform`, `int`, `choice`."""

    uniform: list[FiniteFloat] | None = Field(
        None, min_length=2, max_length=2, description="[low, high]: a float drawn uniformly from low to high."
    )
    log_uniform: list[FiniteFloat] | None = Field(
        None, min_length=2, max_length=2,
        description="[low, high], both > 0: a float whose logarithm is uniform (learning rates, weight decay).",
    )
    int_: list[int] | None = Field(
        None, alias="int", min_length=2, max_length=2,
        description="[low, high]: an integer from low to high, both included.",
    )
    choice: list[Any] | None = Field(
        None, min_length=1, max_length=10_000, description="One of these values (any TOML values), each equally likely."
    )

    @model_validator(mode="after")
    def _one_well_formed(self) -> Distribution:
        given = [name for name in ("uniform", "log_uniform", "int", "choice") if self.values_of(name) is not None]
        if len(given) != 1:
            found = ", ".join(given) if given else "none"
            raise ValueError(f"expected exactly one of uniform, log_uniform, int, choice; found {found}")
        kind = given[0]
        if kind == "choice":
            return self
        low, high = self.values_of(kind)
        if kind == "int" and not all(INT64_MIN <= v <= INT64_MAX for v in (low, high)):
            raise ValueError("expected integers within 64 bits")
        if low > high or (low == high and kind != "int"):
            raise ValueError(f"{kind}: expected [low, high] with low < high, found [{low}, {high}]")
        if kind == "log_uniform" and low <= 0:
            raise ValueError(f"log_uniform: expected low > 0, found {low}")
        return self

    @property
    def kind(self) -> str:
        """Which distribution this is: uniform, log_uniform, int or choice."""
        return next(name for name in ("uniform", "log_uniform", "int", "choice") if self.values_of(name) is not None)

    def values_of(self, kind: str) -> list[Any] | None:
        return self.int_ if kind == "int" else getattr(self, kind)

    @property
    def args(self) -> list[Any]:
        """[low, high] or the choices."""
        return list(self.values_of(self.kind) or [])

    def extremes(self) -> list[Any]:
        """The values a search can reach at its edges: low and high, or every choice. A sweep
        that Optuna samples later is validated with these before it starts."""
        return self.args if self.kind == "choice" else list(dict.fromkeys(self.args))

    def sample(self, rng: Any) -> Any:
        """One value, drawn with `rng` (a `random.Random`)."""
        kind, args = self.kind, self.args
        if kind == "choice":
            return args[rng.randrange(len(args))]
        if kind == "int":
            return rng.randint(args[0], args[1])
        if kind == "log_uniform":
            return math.exp(rng.uniform(math.log(args[0]), math.log(args[1])))
        return rng.uniform(args[0], args[1])


class SweepSection(Section):
    """`[sweep]`: run the recipe many times with some values changed (`pipeforge sweep`)."""

    grid: dict[str, list[Any]] = Field(
        default_factory=dict, description='Dotted recipe key → the values to try, e.g. "optimizer.lr" = [0.01, 0.1]; '
        "every combination of the keys' values is a trial.",
    )
    space: dict[str, Distribution] = Field(
        default_factory=dict, description='Dotted recipe key → a distribution to draw from, e.g. "optimizer.lr" = '
        "{ log_uniform = [1e-4, 0.1] }; also uniform, int (bounds included) and choice.",
    )
    sampler: Literal["grid", "random", "tpe"] | None = Field(
        None, description='"grid" (with [sweep.grid], the default there); "random" (with [sweep.space], the '
        'default there): seeded draws; "tpe": Optuna\'s TPE sampler, which learns from finished trials '
        "(needs pipeforge[optuna]).",
    )
    trials: int | None = Field(
        None, ge=1, le=MAX_TRIALS, description="Trials of a search (random or tpe); a grid runs each of its points once.",
    )
    parallel: int = Field(1, ge=1, le=256, description="Worker processes that run trials at once (each uses one torch thread).")
    seed: int = Field(0, ge=INT64_MIN, le=INT64_MAX, description="Seeds the sampler; every trial trains with run.seed.")
    monitor: str | None = Field(
        None, min_length=1, max_length=200, description='The metrics.jsonl key that ranks trials, e.g. "val_accuracy"; '
        "default: trainer.best_metric. A trial's objective is its best epoch value.",
    )
    mode: Literal["min", "max"] | None = Field(
        None, description='Whether a lower or higher monitor is better; default: "min" for a loss, else "max".'
    )
    pruning: bool = Field(
        False, description="Stop unpromising trials early (Optuna's median pruner on the monitor, after each epoch); "
        "with Optuna only (sampler tpe, or a storage).",
    )
    storage: str | None = Field(
        None, min_length=1, max_length=4096, description="Optuna storage shared by several `pipeforge sweep` "
        "processes: an RDB URL (sqlite:///study.db) or a journal file path; default for tpe: <sweep dir>/optuna.journal.",
    )
    study: str | None = Field(
        None, min_length=1, max_length=200, description="Optuna study name in the storage; default: run.name.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> SweepSection:
        for table in (self.grid, self.space):
            for key in table:
                if not _is_key(key):
                    raise ValueError(f"'{key[:80]}' is not a dotted recipe key such as optimizer.lr")
        for key, values in self.grid.items():
            if not values:
                raise ValueError(f"grid '{key}' has no values")
        if self.grid and self.space:
            raise ValueError("a sweep is a grid or a search, not both: write the grid's keys in [sweep.space] as "
                             "{ choice = [...] }, or drop [sweep.space]")
        if not self.grid and not self.space:
            raise ValueError('nothing to sweep: add [sweep.grid] or [sweep.space] (or --grid / --space)')
        sampler = self.chosen_sampler
        if sampler == "grid" and not self.grid:
            raise ValueError('sampler "grid" needs [sweep.grid]')
        if sampler != "grid" and self.grid:
            raise ValueError(f'sampler "{sampler}" draws from [sweep.space]; a grid is run with sampler "grid"')
        if sampler == "grid" and self.trials is not None:
            raise ValueError(f"a grid runs each of its {self.grid_size():,} points once: remove trials")
        if sampler != "grid" and self.trials is None:
            raise ValueError(f'a {sampler} search needs trials = N')
        if sampler == "grid" and self.grid_size() > MAX_TRIALS:
            raise ValueError(f"the grid has {self.grid_size():,} points; at most {MAX_TRIALS:,}")
        if self.uses_optuna:
            offered = [v for values in self.grid.values() for v in values]
            offered += [v for dist in self.space.values() if dist.kind == "choice" for v in dist.args]
            if any(v is not None and not isinstance(v, (bool, int, float, str)) for v in offered):
                raise ValueError("Optuna takes numbers, strings and booleans as choices, not arrays or tables: "
                                 "sweep a scalar key instead (e.g. model.hidden.0)")
        if self.pruning and not self.uses_optuna:
            raise ValueError('pruning is done by Optuna: use sampler = "tpe" (or a storage)')
        return self

    @property
    def chosen_sampler(self) -> str:
        return self.sampler or ("grid" if self.grid else "random")

    @property
    def uses_optuna(self) -> bool:
        """Whether Optuna picks the trials: for TPE, and whenever a storage is shared."""
        return self.chosen_sampler == "tpe" or self.storage is not None

    def grid_size(self) -> int:
        return math.prod(len(values) for values in self.grid.values())


def _is_key(key: str) -> bool:
    return len(key) <= 200 and re.match(KEY_PATTERN, key) is not None
