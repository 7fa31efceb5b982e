"""`pipeforge sweep`: run a recipe many times with values varied, in worker processes.

The steps: read the sweep recipe and the command line's additions → expand and validate every
trial (`sweep.plan_sweep`; no torch, nothing created when any trial is invalid: exit 2) → take
the sweep dir (`sweep.SweepDir`: new, or the same sweep to continue) → start `parallel` worker
processes (`sweep_worker`) and hand each a trial when it is free — the next grid point or
random draw, or Optuna's next suggestion — skipping finished trials and resuming interrupted
ones → record each outcome in sweep.jsonl (and in the Optuna study) → print the trials ranked
by the objective. Ctrl-C stops every worker with a checkpoint; the sweep exits 130 and says how
to continue it.
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rich.table import Table
from rich.text import Text

from pipeforge.version import __version__
from pipeforge.cli_common import discover_plugins, err, error, out, warning
from pipeforge.errors import EXIT_FAILURE, EXIT_INTERRUPTED, RecipeError, UsageError
from pipeforge.sweep import (DONE, SWEEP_RECIPE, SweepDir, SweepPlan, Trial, TrialRecord, plan_sweep, ranked, read_sweep,
                             toml_value)


def add_commands(command: Callable[..., Any], recipe_args: Callable[..., None]) -> None:
    """Add `sweep` with the CLI's `command(name, func, help)` factory."""
    sweep = command("sweep", cmd_sweep, "run a recipe many times with values varied: a grid, a random or an Optuna search")
    recipe_args(sweep, optional=True)
    sweep.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,…",
                       help="try each value of KEY (every combination with the other --grid keys); repeatable")
    sweep.add_argument("--space", action="append", default=[], metavar="KEY=DIST(ARGS)",
                       help="draw KEY from uniform(low,high), log_uniform(low,high), int(low,high) or choice(a,b,…); repeatable")
    sweep.add_argument("--sampler", choices=("grid", "random", "tpe"), help="how trials are chosen (tpe: Optuna)")
    sweep.add_argument("--trials", type=int, metavar="N", help="trials of a random or tpe search")
    sweep.add_argument("--parallel", type=int, metavar="P", help="worker processes (default 1)")
    sweep.add_argument("--seed", type=int, help="seed of the sampler (default 0)")
    sweep.add_argument("--monitor", metavar="KEY", help="metrics.jsonl key that ranks trials (default trainer.best_metric)")
    sweep.add_argument("--mode", choices=("min", "max"), help="lower or higher monitor is better")
    sweep.add_argument("--pruning", action="store_const", const=True, help="let Optuna stop unpromising trials")
    sweep.add_argument("--storage", metavar="URL", help="Optuna storage to share a study: sqlite:///FILE.db or a journal file")
    sweep.add_argument("--study", metavar="NAME", help="Optuna study name (default run.name)")
    sweep.add_argument("--sweep-dir", type=Path, metavar="DIR", help="where trials go (default sweeps/<name>); "
                       "running the same sweep into it again continues it")
    sweep.add_argument("--resume", type=Path, metavar="SWEEP_DIR", help=f"continue the sweep in SWEEP_DIR (its {SWEEP_RECIPE})")
    sweep.add_argument("--dry-run", action="store_true", help="validate every trial and list them; create nothing")
    sweep.add_argument("--quiet", action="store_true", help="print only the summary and errors")


def cmd_sweep(args: argparse.Namespace) -> int:
    plugins = discover_plugins()
    if (args.recipe is None) == (args.resume is None):
        raise UsageError("sweep needs a RECIPE, or --resume SWEEP_DIR (not both)")
    if args.resume is not None and args.sweep_dir is not None:
        raise UsageError("--resume SWEEP_DIR continues the sweep in SWEEP_DIR: leave out --sweep-dir")
    source = args.recipe if args.resume is None else args.resume / SWEEP_RECIPE
    if args.resume is not None and not source.is_file():
        raise UsageError(f"{args.resume} is not a sweep dir (no {SWEEP_RECIPE})")
    settings = {key: getattr(args, key) for key in ("sampler", "trials", "parallel", "seed", "monitor", "mode",
                                                      "pruning", "storage", "study")}
    data, locate = read_sweep(source, args.overrides, args.grid, args.space, settings)
    try:
        plan = plan_sweep(data, plugins.registry, str(source))
    except RecipeError as exc:  # each problem also says where its key was written
        raise locate(exc) from None
    if plan.section.uses_optuna:
        from pipeforge import sweep_optuna

        sweep_optuna.require()
    if args.dry_run:
        return _dry_run(plan)
    path = args.resume or args.sweep_dir or Path("sweeps") / (plan.study if plan.section.storage else plan.name)
    sets = "".join(f" --set {o}" for o in args.overrides)
    header = (f"Sweep recipe resolved by pipeforge {__version__} from {source}{sets} and the command line.\n"
              f"Continue it with: pipeforge sweep --resume {path}")
    sweep_dir = SweepDir.open(path, plan.data, header)
    try:
        return Sweeper(plan, sweep_dir, quiet=args.quiet).run()
    finally:
        sweep_dir.release()


def _dry_run(plan: SweepPlan) -> int:
    section = plan.section
    if plan.trials:
        out.print(Text(f"{plan.source}: ok, {len(plan.trials):,} trials ({section.chosen_sampler}), "
                       f"{plan.monitor} ({plan.mode}) ranks them"))
        for trial in plan.trials[:20]:
            out.print(Text(f"  {trial.id}  {trial.label()}"))
        if len(plan.trials) > 20:
            out.print(Text(f"  … and {len(plan.trials) - 20:,} more"))
    else:
        grid = section.chosen_sampler == "grid"
        total = section.grid_size() if grid else section.trials or 0
        checked = "every grid point" if grid else "every edge of the space"
        out.print(Text(f"{plan.source}: ok, {total:,} trials drawn by Optuna ({section.chosen_sampler}); "
                       f"{checked} validated; {plan.monitor} ({plan.mode}) ranks them"))
    return 0


@dataclass
class Worker:
    index: int
    process: Any
    inbox: Any
    trial: Trial | None = None
    resumed: bool = False
    retired: bool = False


@dataclass
class Sweeper:
    """The parent process of a sweep: hands trials to workers, records outcomes, reports."""

    plan: SweepPlan
    sweep_dir: SweepDir
    quiet: bool = False
    stopping: int | None = None
    todo: deque[tuple[Trial, bool]] = field(default_factory=deque)
    trials: dict[int, Trial] = field(default_factory=dict)
    study: Any = None
    storage: str = ""
    optuna_ids: dict[int, int] = field(default_factory=dict)
    workers: list[Worker] = field(default_factory=list)
    told_stopping: bool = False

    def run(self) -> int:
        plan, section = self.plan, self.plan.section
        full = True  # no more trials to draw (a grid or random search has them all in todo)
        if section.uses_optuna:
            from pipeforge import sweep_optuna

            self.storage = sweep_optuna.storage_spec(section, self.sweep_dir.path)
            self.study = sweep_optuna.open_study(section, plan.study, plan.mode, self.storage)
            known = self.sweep_dir.known_trials()
            ids = sweep_optuna.trial_ids(self.study)
            records = self.sweep_dir.records(known, plan.monitor, plan.mode)
            # Trials of this sweep dir that were cut short and that the study still holds open.
            for record in records:
                if record.status not in DONE and ids.get(record.trial.number, (0, ""))[1] == "RUNNING":
                    self.optuna_ids[record.trial.number] = ids[record.trial.number][0]
                    self.todo.append((record.trial, record.status == "interrupted"))
            total = sweep_optuna.total_trials(section)
            full = len(self.study.get_trials(deepcopy=False)) >= total
        else:
            records = self.sweep_dir.records(plan.trials, plan.monitor, plan.mode)
            self.todo.extend((r.trial, r.status == "interrupted") for r in records if r.status not in DONE)
            total = len(plan.trials)
        self.trials = {r.trial.number: r.trial for r in records}
        done = sum(r.status in DONE for r in records)
        resumed = sum(1 for _, again in self.todo if again)
        self.say(f"sweep {plan.name}: {total:,} trials, {done:,} done, {resumed:,} to resume; "
                 f"sweep dir {self.sweep_dir.path}")
        wanted = min(section.parallel, len(self.todo))
        if self.study is not None and not full:  # Optuna has more trials to hand out
            wanted = section.parallel
        if wanted:
            self.work(wanted)
        return self.report()

    # -------------------------------------------------------------- the workers

    def work(self, count: int) -> None:
        import multiprocessing

        from pipeforge import sweep_worker

        context = multiprocessing.get_context("spawn")
        outbox = context.Queue()
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for index in range(count):
                inbox = context.Queue()
                process = context.Process(target=sweep_worker.main, args=(index, inbox, outbox),
                                          name=f"pipeforge-sweep-worker-{index}")
                process.start()
                self.workers.append(Worker(index, process, inbox))
            while any(not w.retired or w.process.is_alive() for w in self.workers):
                if self.stopping is not None and not self.told_stopping:
                    self.told_stopping = True
                    self.say("stopping: each running trial writes a checkpoint (Ctrl-C again to stop at once)")
                try:
                    self._handle(outbox.get(timeout=0.5))
                except queue.Empty:
                    self._check_alive(outbox)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for worker in self.workers:
                if not worker.retired:  # only after an error in this loop
                    worker.inbox.put(None)
            for worker in self.workers:
                worker.process.join(timeout=30)
                if worker.process.is_alive():
                    worker.process.kill()
                    worker.process.join()

    def _handle(self, message: tuple[str, int, Any]) -> None:
        from pipeforge import sweep_worker

        kind, index, payload = message
        worker = self.workers[index]
        if kind == sweep_worker.LOG:
            warning(payload)
            return
        if kind == sweep_worker.DONE:
            self._record(worker, payload)
        self._dispatch(worker)

    def _dispatch(self, worker: Worker) -> None:
        task = None if self.stopping is not None else self._next()
        if task is None:
            worker.inbox.put(None)
            worker.retired = True
            return
        trial, again = task
        worker.trial, worker.resumed = trial, again
        run_dir = self.sweep_dir.trial_dir(trial)
        self.sweep_dir.append(trial, "resumed" if again else "started", process=worker.process.pid)
        message: dict[str, Any] = {
            "id": trial.id, "number": trial.number, "overrides": trial.overrides(), "run_dir": str(run_dir),
            "recipe": str(self.sweep_dir.path / SWEEP_RECIPE), "resume": again, "monitor": self.plan.monitor,
        }
        if self.study is not None:
            message["optuna"] = {"storage": self.storage, "study": self.plan.study, "pruning": self.plan.section.pruning,
                                 "trial_id": self.optuna_ids[trial.number]}
        worker.inbox.put(message)

    def _next(self) -> tuple[Trial, bool] | None:
        if self.todo:
            return self.todo.popleft()
        if self.study is None:
            return None
        from pipeforge import sweep_optuna

        asked = sweep_optuna.ask(self.study, self.plan.section)
        if asked is None:
            return None
        trial, optuna_id = asked
        self.optuna_ids[trial.number] = optuna_id
        self.trials[trial.number] = trial
        return trial, False

    def _record(self, worker: Worker, outcome: dict[str, Any]) -> None:
        trial = worker.trial
        worker.trial = None
        if trial is None:
            return
        status = outcome["status"]
        if status == "not started":  # handed over just as a Ctrl-C came: it stays to do
            self.sweep_dir.append(trial, "interrupted", error="not started")
            return
        record = self.sweep_dir.records([trial], self.plan.monitor, self.plan.mode)[0]
        self.sweep_dir.append(trial, status, objective=record.objective, monitor=self.plan.monitor,
                              epochs=record.epochs, error=outcome.get("error"))
        if self.study is not None and status in DONE:
            from pipeforge import sweep_optuna

            sweep_optuna.tell(self.study, trial.number, status, record.objective)
        value = "-" if record.objective is None else f"{record.objective:.6g}"
        line = f"{trial.id} {status}  {self.plan.monitor} {value}  ({trial.label()})"
        if status == "failed":
            warning(f"{line}: {outcome.get('error')}")
        else:
            self.say(line)

    def _check_alive(self, outbox: Any) -> None:
        """A worker that died (killed, out of memory): its trial is left to resume, and the sweep
        goes on with the other workers."""
        dead = [w for w in self.workers if not w.retired and not w.process.is_alive()]
        if not dead:
            return
        while True:  # what a worker said just before it ended may still be in the queue
            try:
                self._handle(outbox.get(timeout=0.2))
            except queue.Empty:
                break
        for worker in dead:
            worker.retired = True
            if worker.trial is not None:
                code = worker.process.exitcode
                self.sweep_dir.append(worker.trial, "crashed", error=f"worker exit code {code}")
                warning(f"{worker.trial.id}: its worker process died (exit code {code}); it is resumed when "
                        "the sweep runs again")
                worker.trial = None

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.stopping is not None:  # a second Ctrl-C: stop now, without waiting for checkpoints
            for worker in self.workers:
                if worker.process.is_alive():
                    worker.process.kill()
            os._exit(128 + signum)
        self.stopping = signum
        for worker in self.workers:  # also when only this process was signalled
            if worker.trial is not None and worker.process.is_alive():
                os.kill(worker.process.pid, signal.SIGINT)

    # -------------------------------------------------------------- the end

    def report(self) -> int:
        plan = self.plan
        trials = sorted(self.trials.values(), key=lambda t: t.number)
        records = ranked(self.sweep_dir.records(trials, plan.monitor, plan.mode), plan.mode)
        if records:
            out.print(summary_table(records, plan, self.sweep_dir.path))
        best = next((r for r in records if r.objective is not None and r.status in ("finished", "pruned")), None)
        if best is not None:
            out.print(Text(f"best: {best.trial.id} ({best.trial.label()}) {plan.monitor} {best.objective:.6g}; "
                           f"run dir {self.sweep_dir.trial_dir(best.trial)}"))
        left = [r for r in records if r.status not in DONE]
        if self.stopping is not None or left:
            error(f"the sweep stopped with {len(left)} trial{'s' if len(left) != 1 else ''} left; continue it with: "
                  f"pipeforge sweep --resume {self.sweep_dir.path}")
            return EXIT_INTERRUPTED if self.stopping is not None else EXIT_FAILURE
        failed = [r for r in records if r.status == "failed"]
        if failed:
            error(f"{len(failed)} trial{'s' if len(failed) != 1 else ''} failed: "
                  f"{', '.join(r.trial.id for r in failed[:10])} (see {self.sweep_dir.path / 'sweep.jsonl'})")
            return EXIT_FAILURE
        return 0

    def say(self, message: str) -> None:
        if not self.quiet:
            err.print(Text(message))


def summary_table(records: list[TrialRecord], plan: SweepPlan, path: Path) -> Table:
    """The trials, best objective first: rank, trial, status, objective, epochs, each swept value."""
    keys = list(plan.section.grid or plan.section.space)
    table = Table(title=Text(f"sweep {plan.name}: {path}"))
    for column in ("#", "trial", "status", f"{plan.monitor} ({plan.mode})", "epochs", *keys):
        table.add_column(Text(column))
    for rank, record in enumerate(records, 1):
        value = "" if record.objective is None else f"{record.objective:.6g}"
        cells = [str(rank), record.trial.id, record.status, value, str(record.epochs),
                 *(_shown(record.trial.values.get(key)) for key in keys)]
        table.add_row(*map(Text, cells))
    return table


def _shown(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else toml_value(value)
