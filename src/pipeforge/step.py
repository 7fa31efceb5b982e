"""One training step, and the learning-rate schedule the steps follow.

`Step` is the forward/backward/update of one batch with the recipe's precision (a gradient
scaler under fp16), gradient accumulation (the loss weighted by samples, the update once per
group, DDP's all-reduce skipped inside a group) and clipping. `Schedule` steps the recipe's
scheduler per epoch or per optimizer step, behind an optional linear warm-up. The loop that
calls them is `engine.fit`.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from pipeforge.context import BuildContext
from pipeforge.distributed import Dist
from pipeforge.errors import Problem, RecipeError, UsageError


def resolve_precision(name: str, device: torch.device) -> str:
    """"auto" → bf16 where the device computes in it, else fp16 on CUDA, fp32 on the CPU; an
    explicit choice the device cannot run is refused at start."""
    cuda = device.type == "cuda"
    if name == "auto":
        if cuda:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    if name == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise UsageError(f'trainer.precision is "bf16" but {torch.cuda.get_device_name(device)} has no bfloat16 support; use "fp16" or "auto"')
    return name


@dataclass
class Step:
    """The forward pass (and, with an optimizer, backward and update) of one batch."""

    forward: Any
    loss_fn: Any
    optimizer: Any
    device: torch.device
    precision: str
    channels_last: bool
    dist: Dist
    accumulate: int = 1
    clip_norm: float | None = None
    clip_value: float | None = None
    log_norm: bool = False
    scaler: Any = None  # torch.amp.GradScaler under fp16
    last_norm: torch.Tensor | None = None  # the latest pre-clip gradient norm (on the device)
    params: list[torch.nn.Parameter] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.optimizer is not None:
            self.params = [p for group in self.optimizer.param_groups for p in group["params"]]
            if self.precision == "fp16":
                self.scaler = torch.amp.GradScaler(self.device.type)

    def inputs(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if inputs.device != self.device:  # in-memory data already lives on the device
            inputs = inputs.to(self.device, non_blocking=True)
            targets = targets.to(self.device, non_blocking=True)
        if self.channels_last and inputs.dim() == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return inputs, targets

    def autocast(self) -> Any:
        if self.precision in ("bf16", "fp16"):
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
            return torch.autocast(self.device.type, dtype=dtype)
        return contextlib.nullcontext()

    def train(self, inputs: torch.Tensor, targets: torch.Tensor, weight: float | None, update: bool) -> torch.Tensor:
        """Forward and backward one batch; with `update`, also step the optimizer. `weight`
        (this batch's share of its accumulation group's samples) scales the loss so that a
        group's gradient is the gradient of the group's mean loss; None means 1."""
        # Inside an accumulation group DDP need not all-reduce: the group's last backward does.
        quiet = self.dist.enabled and not update and hasattr(self.forward, "no_sync")
        with self.forward.no_sync() if quiet else contextlib.nullcontext():
            with self.autocast():
                loss = self.loss_fn(self.forward(inputs), targets)
            scaled = loss if weight is None else loss * weight
            (scaled if self.scaler is None else self.scaler.scale(scaled)).backward()
        if update:
            self.update()
        return loss.detach()

    def update(self) -> None:
        """Clip, step the optimizer (through the scaler under fp16) and clear the gradients."""
        if self.scaler is not None and (self.clip_norm or self.clip_value or self.log_norm):
            self.scaler.unscale_(self.optimizer)  # clip and measure the true gradients
        if self.clip_norm or self.log_norm:
            # With no clipping this only measures: the scale factor is clamped to 1.
            self.last_norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip_norm or math.inf)
        if self.clip_value:
            torch.nn.utils.clip_grad_value_(self.params, self.clip_value)
        if self.scaler is None:
            self.optimizer.step()
        else:
            self.scaler.step(self.optimizer)  # skipped when the gradients overflowed
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)


def group_bounds(batch_index: int, batches: int, accumulate: int) -> tuple[int, int]:
    """The accumulation group of a batch: (its first batch, one past its last)."""
    first = batch_index - batch_index % accumulate
    return first, min(first + accumulate, batches)


class Schedule:
    """The recipe's scheduler, stepped per epoch or per optimizer step, behind a warm-up.

    The warm-up (torch's `LinearLR` from `warmup_start_factor` to 1) and the scheduler are
    chained with torch's `SequentialLR`; a scheduler with a `monitor` (reduce-on-plateau) is
    stepped with that metric after each epoch.
    """

    def __init__(self, scheduler: Any, interval: str) -> None:
        self.scheduler = scheduler
        self.interval = interval
        self.monitor = getattr(scheduler, "monitor", None)

    def after_step(self) -> None:
        if self.interval == "step":
            self.scheduler.step()

    def after_epoch(self, row: dict[str, Any]) -> None:
        if self.interval != "epoch":
            return
        if self.monitor is None:
            self.scheduler.step()
        elif self.monitor in row:
            self.scheduler.step(row[self.monitor])
        else:
            raise RecipeError([Problem("scheduler.monitor", f"'{self.monitor}' is not a key of this run's metrics "
                                                            f"(it has: {', '.join(sorted(row))})")])


def steps_per_epoch(batches: int, accumulate: int) -> int:
    """Optimizer steps in an epoch of `batches` batches (a short last group steps too)."""
    return -(-batches // accumulate)


def build_schedule(context: BuildContext, spec: Any, epochs: int, per_epoch: int, max_steps: int | None) -> Schedule:
    """Build `[scheduler]` for `context.optimizer`, telling its builder how many scheduler
    steps the run has after the warm-up (`context.schedule_length`); composes the warm-up."""
    total_steps = min(epochs * per_epoch, max_steps) if max_steps else epochs * per_epoch
    length = total_steps if spec.interval == "step" else (-(-total_steps // per_epoch) if per_epoch else epochs)
    warmup = spec.warmup_steps or spec.warmup_epochs or (round(spec.warmup_ratio * length) if spec.warmup_ratio else 0)
    if spec.warmup and not 0 < warmup < length:
        unit = "optimizer steps" if spec.interval == "step" else "epochs"
        raise RecipeError([Problem("scheduler", f"the warm-up is {warmup} of the run's {length} {unit}; "
                                                "it must be at least 1 and fewer than the run's")])
    context.total_steps = total_steps
    context.schedule_length = length - warmup
    scheduler = context.build("scheduler", spec)
    if warmup:
        if getattr(scheduler, "monitor", None) is not None or not hasattr(scheduler, "get_last_lr"):
            raise RecipeError([Problem("scheduler.name", f"'{spec.name}' cannot follow a warm-up (it is stepped "
                                                         "with a metric); remove the warm-up")])
        start = torch.optim.lr_scheduler.LinearLR(context.optimizer, spec.warmup_start_factor, 1.0, warmup)
        scheduler = torch.optim.lr_scheduler.SequentialLR(context.optimizer, [start, scheduler], [warmup])
    if spec.interval == "step" and getattr(scheduler, "monitor", None) is not None:
        raise RecipeError([Problem("scheduler.interval", f"'{spec.name}' is stepped with a metric after each "
                                                         'epoch; use interval = "epoch"')])
    return Schedule(scheduler, spec.interval)
