"""Optuna as a sweep's search engine: the study, drawing trials from it, telling it results, and
pruning through the per-epoch validation.

Imported only by a sweep that uses Optuna (`sampler = "tpe"`, or a `storage`), and Optuna is an
optional extra (`pip install "pipeforge[optuna]"`). The study lives in a storage — a journal
file (the default for a TPE sweep: `<sweep dir>/optuna.journal`) or an RDB URL such as
`sqlite:///study.db` — so several `pipeforge sweep` processes, on one machine or many, can share
one study: each asks it for the next trial, and Optuna hands every trial out once.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeforge.errors import UsageError
from pipeforge.hookspecs import hookimpl
from pipeforge.sweep import PRUNED_REASON, Trial
from pipeforge.sweep_table import SweepSection

if TYPE_CHECKING:
    import optuna

    from pipeforge.context import RunState

JOURNAL = "optuna.journal"


def require() -> Any:
    """The optuna module, or a `UsageError` saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise UsageError('this sweep uses Optuna (sampler "tpe", or a storage), which is not installed: '
                         'pip install "pipeforge[optuna]"') from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def storage_spec(section: SweepSection, sweep_dir: Path) -> str:
    """Where the study lives: the table's or command line's storage, else a journal file in the
    sweep dir (so that a TPE sweep can be continued like any other)."""
    return section.storage or str(sweep_dir / JOURNAL)


def open_storage(spec: str) -> Any:
    """An RDB storage for a URL (`sqlite:///study.db`, `postgresql://…`), else a journal file."""
    optuna = require()
    if "://" in spec:
        try:
            return optuna.storages.RDBStorage(spec)
        except Exception as exc:  # a bad URL, a missing driver, a server that does not answer
            raise UsageError(f"cannot open the Optuna storage {spec}: {type(exc).__name__}: {exc}") from None
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    try:
        return JournalStorage(JournalFileBackend(spec))
    except OSError as exc:
        raise UsageError(f"cannot open the Optuna journal {spec}: {exc.strerror or exc}") from None


def open_study(section: SweepSection, study_name: str, mode: str, spec: str) -> optuna.Study:
    """The sweep's study in its storage, created if new. `UsageError` if a study of that name
    optimizes in the other direction."""
    optuna = require()
    direction = "minimize" if mode == "min" else "maximize"
    study = optuna.create_study(storage=open_storage(spec), study_name=study_name, direction=direction,
                                sampler=_sampler(optuna, section), pruner=_pruner(optuna, section),
                                load_if_exists=True)
    if study.direction.name.lower() != direction:
        raise UsageError(f"the Optuna study '{study_name}' in {spec} is to {study.direction.name.lower()}, "
                         f"this sweep's mode is {mode}; use another --study")
    return study


def _sampler(optuna: Any, section: SweepSection) -> Any:
    sampler = section.chosen_sampler
    if sampler == "grid":
        return _grid_sampler(optuna)(dict(section.grid), seed=section.seed)
    if sampler == "random":
        return optuna.samplers.RandomSampler(seed=section.seed)
    return optuna.samplers.TPESampler(seed=section.seed)


def _grid_sampler(optuna: Any) -> Any:
    class Grid(optuna.samplers.GridSampler):
        """Optuna's grid sampler, minus its `study.stop()` once the grid is used up: that works
        only inside `study.optimize`, and a sweep counts its trials itself (`ask`)."""

        def after_trial(self, *args: Any, **kwargs: Any) -> None:
            pass

    return Grid


def _pruner(optuna: Any, section: SweepSection) -> Any:
    return pruner(optuna) if section.pruning else optuna.pruners.NopPruner()


def pruner(optuna: Any) -> Any:
    """The sweep's pruner: Optuna's median pruner with its defaults (a trial is stopped after
    an epoch whose monitor is worse than the median of other trials at that epoch, once five
    trials have finished)."""
    return optuna.pruners.MedianPruner()


def total_trials(section: SweepSection) -> int:
    return section.grid_size() if section.chosen_sampler == "grid" else int(section.trials or 0)


def ask(study: optuna.Study, section: SweepSection) -> tuple[Trial, int] | None:
    """The study's next trial and its Optuna id, or None once the study holds all its trials
    (counted over every process that shares it)."""
    if len(study.get_trials(deepcopy=False)) >= total_trials(section):
        return None
    trial = study.ask(distributions(section))
    return Trial(trial.number, dict(trial.params)), trial._trial_id


def trial_ids(study: optuna.Study) -> dict[int, tuple[int, str]]:
    """trial number → (Optuna's id for it, its state's name)."""
    return {t.number: (t._trial_id, t.state.name) for t in study.get_trials(deepcopy=False)}


def distributions(section: SweepSection) -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if section.chosen_sampler == "grid":
        return {key: CategoricalDistribution(values) for key, values in section.grid.items()}
    found: dict[str, Any] = {}
    for key, dist in section.space.items():
        low_high = dist.args
        if dist.kind == "choice":
            found[key] = CategoricalDistribution(dist.args)
        elif dist.kind == "int":
            found[key] = IntDistribution(low_high[0], low_high[1])
        else:
            found[key] = FloatDistribution(float(low_high[0]), float(low_high[1]), log=dist.kind == "log_uniform")
    return found


def tell(study: optuna.Study, number: int, status: str, objective: float | None) -> None:
    """Record a trial's end in the study: finished (with its objective), pruned or failed. A trial
    the study no longer holds as running (told by another process) is left as it is."""
    from optuna.trial import TrialState

    ids = trial_ids(study)
    if ids.get(number, (0, ""))[1] != "RUNNING":
        return
    if status == "finished" and objective is not None:
        study.tell(number, objective)
    elif status == "pruned":
        study.tell(number, state=TrialState.PRUNED)
    else:
        study.tell(number, state=TrialState.FAIL)


class PruningReporter:
    """Reports the monitored metric to Optuna after each epoch and, when the study's pruner says
    so, stops the trial through `state.request_stop` (it then ends like a finished run, its
    reason starting with `PRUNED_REASON`)."""

    def __init__(self, storage: str, study: str, trial_id: int, monitor: str) -> None:
        optuna = require()
        loaded = optuna.load_study(study_name=study, storage=open_storage(storage),
                                   sampler=optuna.samplers.RandomSampler(), pruner=pruner(optuna))
        self.trial = optuna.trial.Trial(loaded, trial_id)
        self.monitor = monitor

    @hookimpl
    def on_epoch_end(self, state: RunState, epoch: int, metrics: dict[str, float]) -> None:
        value = metrics.get(self.monitor)
        if not isinstance(value, (int, float)):
            return
        self.trial.report(float(value), epoch)
        if self.trial.should_prune():
            state.request_stop(f"{PRUNED_REASON} after epoch {epoch}")
