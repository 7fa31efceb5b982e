"""The training loop. Read `fit` top to bottom: set up → build → (resume) → epochs of
train / evaluate / record / checkpoint → save. Building is `build.py`, one step `step.py`,
evaluation `evaluation.py`, checkpoint cadence `saver.py`; every extra behaviour (progress,
TensorBoard, early stopping, …) hangs off a lifecycle hook; nothing here prints.
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Callable, NoReturn

import torch

from pipeforge.build import build_ema, build_parts, eval_splits, model_summary
from pipeforge.checkpoint import Checkpoint, EpochProgress, restore_rng
from pipeforge.context import RunState, StopRequest
from pipeforge.distributed import Dist, Flags
from pipeforge.errors import Interrupted, TimeLimitReached
from pipeforge.evaluation import Evaluator
from pipeforge.loaders import Batches
from pipeforge.plugins import Plugins, register
from pipeforge.recipe import Recipe, check_against_data
from pipeforge.rundir import RunDir
from pipeforge.saver import Saver
from pipeforge.setup import deterministic_algorithms, resolve_device, seed_everything, set_threads
from pipeforge.step import Schedule, Step, group_bounds, resolve_precision


def fit(
    recipe: Recipe, plugins: Plugins, run_dir: RunDir, *, extra: list[Any] = (),
    stop: StopRequest | None = None, resume: Checkpoint | None = None, dist: Dist = Dist(),
) -> RunState:
    """Train `recipe` into `run_dir` and return the final `RunState`.

    `extra` are plugin objects registered for this run (e.g. the console reporter); `stop` is
    polled after each step; `resume` is a loaded checkpoint to continue from; `dist` is this
    process's rank in a data-parallel job whose process group is already started (only rank 0
    writes files and runs callbacks). Raises `Interrupted` after checkpointing on a stop
    request, `TrainingError` when the loss is not finite, and `PluginError`/`DataError` when a
    component cannot be built.
    """
    with deterministic_algorithms(recipe.trainer.deterministic):
        return _fit(recipe, plugins, run_dir, list(extra), stop, resume, dist)


def _fit(recipe: Recipe, plugins: Plugins, run_dir: RunDir, extra: list[Any], stop: StopRequest | None,
         resume: Checkpoint | None, dist: Dist) -> RunState:
    hook = plugins.manager.hook
    trainer = recipe.trainer
    set_threads(trainer.threads)
    seed_everything(recipe.run.seed)
    device = resolve_device(trainer.device, dist)
    precision = resolve_precision(trainer.precision, device)
    # The shuffle order has its own generator so that model code drawing random numbers
    # (dropout, augmentation) does not change which samples form a batch.
    order = torch.Generator().manual_seed(recipe.run.seed)
    parts = build_parts(recipe, plugins, run_dir, device, dist, order)
    datasets, model, optimizer, train = parts.datasets, parts.model, parts.optimizer, parts.train
    scheduler = parts.schedule.scheduler if parts.schedule is not None else None
    ema = build_ema(model, trainer.ema_decay)
    evaluator = Evaluator.build(recipe, datasets, eval_splits(recipe, datasets),
                                ema.module if trainer.ema_for_eval else parts.eval_forward,
                                parts.loss_fn, parts.metrics, device, dist, train_key="train_eval")
    # What `validate` could not know (the data's splits and classes), before any step runs.
    check_against_data(recipe, list(evaluator.batches), datasets.num_classes, [m.name for m in parts.metrics])

    step = Step(parts.forward, parts.loss_fn, optimizer, device, precision, trainer.channels_last, dist,
                trainer.accumulate_grad_batches, trainer.clip_grad_norm, trainer.clip_grad_value, trainer.log_grad_norm)
    state = RunState(recipe, run_dir.path, str(device), model, optimizer, scheduler, datasets, scaler=step.scaler,
                     ema=ema, model_summary=model_summary(model))
    if dist.is_main:
        run_dir.update_env(model=state.model_summary)
    saver = Saver(run_dir.path, state, trainer, list(evaluator.batches), dist, parts.callbacks, parts.labels)
    progress = EpochProgress(order_state=order.get_state())
    if resume is not None:
        progress = _restore(resume, state, dist)
        saver.restore(resume)
        for key, callback in parts.callbacks.items():
            if key in resume.callbacks:
                callback.load_state_dict(resume.callbacks[key])
    limits = Limits(trainer.max_steps, trainer.max_time)
    flags = Flags(dist, 4)  # what every rank must act on alike: see _stops

    hooked = [*((callback, parts.labels[key]) for key, callback in parts.callbacks.items()),
              *((plugin, f"{type(plugin).__name__} object") for plugin in extra)]
    try:
        for plugin, label in hooked:
            register(plugins.manager, plugin, label)
        hook.on_fit_start(state=state)
        for epoch in range(state.epoch + 1, trainer.epochs + 1):
            state.epoch = epoch
            hook.on_epoch_start(state=state, epoch=epoch, steps=len(train))
            # Resuming mid-epoch: replay the epoch's shuffle, then skip the batches already done.
            order.set_state(progress.order_state)
            train_loss = train_epoch(state, train, step, progress, hook, saver, stop, parts.schedule, limits, flags,
                                     lambda: record(state, evaluator, hook, run_dir, {"epoch": epoch, "step": state.global_step}))
            row: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss}
            if step.log_norm:
                row["grad_norm"] = progress.mean_grad_norm()
            record(state, evaluator, hook, run_dir, row, parts.schedule)
            progress = EpochProgress(order_state=order.get_state())
            hook.on_epoch_end(state=state, epoch=epoch, metrics=row)
            # After on_epoch_end, so the checkpoint holds what callbacks made of this epoch
            # (an early-stopping counter) and a stop they asked for is the last epoch.
            stopping, due = flags.now([state.stop_reason is not None, dist.is_main and saver.due()])
            if stopping and state.stop_reason is None:
                state.stop_reason = "requested on rank 0"
            saver.epoch_done(progress, epoch, last=stopping, due=due)
            if stopping:
                break
        saver.write_model()
        saver.finish()
    finally:
        saver.close()
        hook.on_fit_end(state=state)
        for plugin, _ in hooked:
            if plugins.manager.is_registered(plugin):
                plugins.manager.unregister(plugin)
    return state


@dataclass
class Limits:
    """Where a run stops besides its last epoch: `max_steps` optimizer steps (finished), or
    `max_time` seconds of this process's training (checkpointed, resumable)."""

    max_steps: int | None
    max_time: float | None
    started: float = field(default_factory=time.monotonic)

    def steps_reached(self, global_step: int) -> bool:
        return self.max_steps is not None and global_step >= self.max_steps

    def time_reached(self) -> bool:
        return self.max_time is not None and time.monotonic() - self.started >= self.max_time


def record(state: RunState, evaluator: Evaluator, hook: Any, run_dir: RunDir, row: dict[str, Any],
           schedule: Schedule | None = None) -> None:
    """Evaluate every split into `row`, add the lr, step an epoch schedule (it may read the
    row), and record the row in the history and metrics.jsonl (rank 0)."""
    for split in evaluator.batches:
        split_metrics = evaluator.run(split)
        hook.on_validation_end(state=state, split=split, metrics=split_metrics)
        row.update(split_metrics)
    row["lr"] = state.optimizer.param_groups[0]["lr"]
    if schedule is not None:
        schedule.after_epoch(row)
    state.history.append(row)
    if evaluator.step.dist.is_main:
        run_dir.append_metrics(row)


def train_epoch(state: RunState, batches: Batches, step: Step, progress: EpochProgress, hook: Any, saver: Saver,
                stop: StopRequest | None, schedule: Schedule | None, limits: Limits, flags: Flags,
                evaluate_now: Callable[[], None]) -> float:
    """Train over the epoch's remaining batches; returns the epoch's mean loss per sample.

    With accumulation, `on_batch_end` follows every batch and `state.global_step` counts
    optimizer steps; a stop is taken between batches, a mid-group checkpoint keeps the group's
    gradients so far. `evaluate_now` records a mid-epoch evaluation (`trainer.eval_every_steps`)."""
    every_eval = state.recipe.trainer.eval_every_steps
    step.forward.train()
    if progress.loss_sum is None:
        progress.loss_sum = torch.zeros((), device=step.device)
    count = len(batches)
    for batch_index, batch in enumerate(batches.epoch(skip=progress.batches_done), progress.batches_done):
        inputs, targets = step.inputs(*batch)
        size = targets.shape[0]
        first, end = group_bounds(batch_index, count, step.accumulate)
        update = batch_index + 1 == end
        # Each batch's mean loss weighted by its share of the group's samples: the group's
        # gradient is that of the group's mean loss (also for a short last group).
        weight = None if step.accumulate == 1 else size / batches.samples(first, end)
        loss = step.train(inputs, targets, weight, update)
        if update:
            state.global_step += 1
            if state.ema is not None and state.global_step % state.recipe.trainer.ema_every_steps == 0:
                state.ema.update_parameters(state.model)
            if step.log_norm:
                state.grad_norm = step.last_norm
                progress.add_grad_norm(step.last_norm)
            if schedule is not None:
                schedule.after_step()
        progress.loss_sum.add_(loss, alpha=size)
        progress.samples += size
        progress.batches_done = batch_index + 1
        hook.on_batch_end(state=state, batch_index=batch_index, loss=loss, batch_size=size)
        signalled, requested, timed_out, due = _stops(stop, state, flags, limits, saver)
        if signalled or timed_out:
            _stop_here(state, progress, saver, stop, timed_out, limits)
        if update and every_eval and state.global_step % every_eval == 0 and batch_index + 1 < count:
            evaluate_now()
            step.forward.train()
        if update:
            saver.step_done(progress, inputs, due)
            if limits.steps_reached(state.global_step):
                state.request_stop(f"max_steps ({limits.max_steps}) reached")
                requested = True
        if requested:  # a callback's request (or max_steps): this epoch ends here, the run after it
            break
    # Under data parallelism, the answers of the last step are still on their way: act on them.
    signalled, _, timed_out, _ = _agreed(flags.drain(), state)
    if signalled or timed_out:
        _stop_here(state, progress, saver, stop, timed_out, limits)
    # Every rank trained on its own shard: the epoch's loss is the mean over all of them.
    totals = step.dist.sum(torch.stack([progress.loss_sum, torch.tensor(float(progress.samples), device=step.device)]))
    mean = (totals[0] / totals[1].clamp(min=1)).item()
    if not math.isfinite(mean):
        raise saver.not_finite(f"the training loss became {mean}")
    return mean


def _stop_here(state: RunState, progress: EpochProgress, saver: Saver, stop: StopRequest | None, timed_out: bool,
               limits: Limits) -> NoReturn:
    """End a run stopped by a signal or `max_time`: checkpoint (on disk before the process
    exits), then raise the error that says how to resume."""
    saver.save(progress)
    saver.finish()
    resume = f"Resume with: pipeforge run --resume {state.run_dir}"
    where = f"in epoch {state.epoch} after step {state.global_step}; checkpoint written. {resume}"
    if timed_out:
        raise TimeLimitReached(f"trainer.max_time ({limits.max_time:g} s) reached {where}")
    number = (stop.signal if stop is not None else None) or signal.SIGTERM
    raise Interrupted(f"stopped by {signal.Signals(number).name} {where}", number)


def _restore(saved: Checkpoint, state: RunState, dist: Dist) -> EpochProgress:
    """Put model, optimizer, scheduler, RNGs and history back as the checkpoint has them.

    The epoch's position is kept in samples, not in this process's batches, so a run
    checkpointed on N processes continues on M: every rank shards the same permutation."""
    state.model.load_state_dict(saved.model)
    state.optimizer.load_state_dict(saved.optimizer)
    if state.scheduler is not None and saved.scheduler is not None:
        state.scheduler.load_state_dict(saved.scheduler)
    if state.scaler is not None and saved.scaler is not None:
        state.scaler.load_state_dict(saved.scaler)
    if state.ema is not None and saved.ema is not None:
        state.ema.load_state_dict(saved.ema)
    for name, param in state.model.named_parameters():  # a checkpoint inside an accumulation group
        if saved.grads and name in saved.grads:
            param.grad = saved.grads[name].to(param.device)
    state.epoch = saved.epochs_done
    state.global_step = saved.global_step
    state.history = list(saved.history)
    restore_rng(saved.rng)
    position = saved.position
    device = next(iter(state.model.parameters()), torch.zeros(())).device
    # The saved running loss is already the sum over all ranks: rank 0 carries it alone.
    mine = dist.is_main
    return EpochProgress(
        order_state=position.order_state,
        batches_done=position.batches_done * position.world_size // dist.world,
        loss_sum=position.loss_sum.to(device) if mine else torch.zeros((), device=device),
        samples=position.samples if mine else 0,
        grad_norm_sum=position.grad_norm_sum.to(device) if position.grad_norm_sum is not None else None,
        grad_norm_steps=position.grad_norm_steps,
    )


def _stops(stop: StopRequest | None, state: RunState, flags: Flags, limits: Limits,
           saver: Saver) -> list[bool]:
    """[a signal asks to stop, a callback asks to stop, max_time is up, a checkpoint is due by
    time], the same on every rank although a signal may reach the ranks at different steps,
    callbacks run on rank 0 only, and clocks differ: under data parallelism every rank acts on
    the answers of the step before (`Flags`), rank 0's clock deciding the time limits."""
    main = flags.dist.is_main
    answers = [stop is not None and stop.signal is not None, state.stop_reason is not None,
               main and limits.time_reached(), main and saver.due()]
    return _agreed(flags.exchange(answers), state)


def _agreed(answers: list[bool], state: RunState) -> list[bool]:
    """`answers` as agreed; a stop requested on rank 0 is now this rank's stop reason too."""
    if answers[1] and state.stop_reason is None:
        state.stop_reason = "requested on rank 0"
    return answers
