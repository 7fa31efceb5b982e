"""The tables of a recipe that belong to pipeforge itself: `[run]`, `[trainer]` and the way the
engine steps a `[scheduler]`. Each field's description is what `pipeforge schema` and the
README show; `recipe.py` validates whole recipes with them.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from pipeforge.errors import shorten
from pipeforge.registry import INT64_MAX, INT64_MIN, ComponentSpec, Params


# A split's name becomes part of metric keys (`val_loss`) and, for some datasets, a folder name.
SplitName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


class Section(BaseModel):
    """A table of pipeforge's own: as strict as component params (see `pipeforge.Params`)."""

    model_config = Params.model_config


class RunSection(Section):
    """`[run]`: what the run is called and how it is seeded."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100,
        description="Run name; the default run dir is runs/<name>-<timestamp>/.",
    )
    seed: int = Field(0, ge=INT64_MIN, le=INT64_MAX, description="Seeds python, numpy and torch, and the data order.")


class TrainerSection(Section):
    """`[trainer]`: how the loop runs."""

    epochs: int = Field(1, ge=1, le=1_000_000, description="Training epochs.")
    batch_size: int = Field(32, ge=1, le=2**24, description="Training batch size.")
    eval_batch_size: int | None = Field(
        None, ge=1, le=2**24, description="Batch size for evaluation; defaults to batch_size."
    )
    shuffle: bool = Field(True, description="Reshuffle the training split every epoch.")
    drop_last: bool = Field(False, description="Drop the last incomplete training batch.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description='"auto" uses CUDA when it is available, else the CPU.'
    )
    num_workers: int | Literal["auto"] = Field(
        "auto", description='DataLoader worker processes per split, for datasets that are not '
        'in-memory tensors; "auto": one less than the CPUs (at most 4). Bitwise-exact resume of '
        "randomly augmented data needs 0.",
    )
    eval_splits: list[SplitName] | None = Field(
        None, description="Splits evaluated after each epoch; default: every split but train."
    )
    checkpoint_every_s: float | str = Field(
        "5m", description='Checkpoint once this long has passed since the last checkpoint (checked after '
        'every optimizer step, so also within long epochs): a crash loses at most about this much training. '
        'A duration such as "5m", "1h" or "90s", or seconds; 0 turns it off. Besides it, a run always '
        "checkpoints after its last epoch and when it is stopped (a signal, max_time).",
    )
    checkpoint_every_steps: int | None = Field(
        None, ge=1, description="Also checkpoint every N optimizer steps."
    )
    checkpoint_every_epochs: int = Field(
        0, ge=0, le=1_000_000, description="Also checkpoint after every N epochs (0: only as checkpoint_every_s "
        "says, and after the last epoch). best.pt holds the best epoch either way: an epoch that is not "
        "checkpointed but is the best so far is kept in memory and written with the next checkpoint.",
    )
    keep_checkpoints: int = Field(2, ge=1, le=10_000, description="Step checkpoints kept (plus best.pt).")
    best_metric: str | None = Field(
        None, min_length=1, max_length=200, description='Metric that picks best.pt, e.g. "val_accuracy"; default: the first '
        "evaluated split's loss. Losses are minimised, everything else maximised. It must be a "
        "key the run writes: <split>_loss or <split>_<metric> of an evaluated split, or train_loss.",
    )
    precision: Literal["fp32", "bf16", "fp16", "auto"] = Field(
        "fp32", description='"bf16" runs forward passes under torch.autocast in bfloat16; "fp16" in '
        'float16 with a gradient scaler (torch.amp.GradScaler); "auto": bf16 where the device '
        "supports it, else fp16 on CUDA, fp32 on the CPU.",
    )
    accumulate_grad_batches: int = Field(
        1, ge=1, le=1_000_000, description="Batches whose gradients are summed into one optimizer step; the "
        "loss is weighted by samples, so k batches of b train like one batch of k*b.",
    )
    clip_grad_norm: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="Clip the gradients' total 2-norm to this before each "
        "optimizer step (unscaled first under fp16).",
    )
    clip_grad_value: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="Clip every gradient element to [-v, v] before each optimizer step.",
    )
    log_grad_norm: bool = Field(
        False, description="Record the gradients' 2-norm before clipping: the epoch's mean as `grad_norm` in "
        "metrics.jsonl, and per step as `state.grad_norm` for callbacks.",
    )
    max_steps: int | None = Field(
        None, ge=1, le=2**62, description="Stop after this many optimizer steps (ends the run as finished; "
        "schedulers plan for it).",
    )
    max_time: float | str | None = Field(
        None, description='Stop with a checkpoint once training has run this long, e.g. "2h30m", "45m", '
        '"90s" or a number of seconds; exit 3, and `pipeforge run --resume` continues.',
    )
    eval_every_steps: int | None = Field(
        None, ge=1, le=2**62, description="Also evaluate every N optimizer steps within epochs; those rows of "
        "metrics.jsonl carry `step` and no train_loss (best.pt and early stopping use epoch rows).",
    )
    ema_decay: float | None = Field(
        None, gt=0, lt=1, description="Keep an exponential moving average of the weights with this decay "
        "(torch.optim.swa_utils.AveragedModel), written as model_ema.pt; e.g. 0.999.",
    )
    ema_every_steps: int = Field(1, ge=1, le=1_000_000, description="Update the average every N optimizer steps.")
    ema_for_eval: bool = Field(
        False, description="Evaluate (metrics.jsonl, best.pt, early stopping) with the averaged weights.",
    )
    deterministic: bool = Field(
        False, description="Use only deterministic torch algorithms (torch.use_deterministic_algorithms, "
        "cuDNN deterministic and not benchmarking, CUBLAS_WORKSPACE_CONFIG): repeatable on a GPU, often slower.",
    )
    threads: int | Literal["auto"] = Field(
        "auto", description='torch CPU threads of the training process. "auto": keeps OMP_NUM_THREADS if set; '
        "else 1 on 2 CPUs or fewer or when other processes keep the CPUs busy (the load average), else "
        "one per CPU (at most 8).",
    )
    channels_last: bool = Field(False, description="Use channels-last memory format for 4-d inputs.")
    compile: bool = Field(
        False, description="torch.compile the model (costs start-up time; pays off on long runs)."
    )
    strategy: Literal["auto", "ddp", "none"] = Field(
        "auto", description='"auto": data-parallel (DDP) when launched by torchrun with WORLD_SIZE > 1; '
        '"ddp": require such a launch; "none": refuse one. batch_size is per process.',
    )
    dist_timeout_s: float = Field(
        300.0, gt=0, le=30 * 86400, description="Seconds a collective may wait for other ranks before the job fails."
    )

    # Checked before the union, whose own errors would name each of its members.
    _workers = field_validator("num_workers", mode="before")(lambda value: _auto_or_int(value, 0, 256))
    _threads = field_validator("threads", mode="before")(lambda value: _auto_or_int(value, 1, 1024))

    @field_validator("max_time", mode="before")
    @classmethod
    def _duration(cls, value: float | str | None) -> float | None:
        return None if value is None else parse_duration(value)

    @field_validator("checkpoint_every_s", mode="before")
    @classmethod
    def _cadence(cls, value: float | str) -> float:
        return 0.0 if value == 0 and not isinstance(value, bool) else parse_duration(value)

    @model_validator(mode="after")
    def _consistent(self) -> TrainerSection:
        if self.clip_grad_norm is not None and self.clip_grad_value is not None:
            raise ValueError("set clip_grad_norm or clip_grad_value, not both")
        if self.ema_for_eval and self.ema_decay is None:
            raise ValueError("ema_for_eval needs ema_decay")
        return self


def _auto_or_int(value: Any, low: int, high: int) -> Any:
    if value == "auto" or (type(value) is int and low <= value <= high):
        return value
    raise ValueError(f'expected "auto" or an integer from {low} to {high}, found {describe(value)}')


_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


def parse_duration(value: float | str) -> float:
    """Seconds in a duration written as a number of seconds or as "1d2h30m10s" (any part)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as \"2h30m\" or a number of seconds")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif not isinstance(value, str):
        raise ValueError("expected a duration such as \"2h30m\" or a number of seconds")
    else:
        found = _DURATION.match(value.strip())
        if not value.strip() or found is None:
            raise ValueError('expected a duration such as "2h30m", "45m" or "90s", or a number of seconds')
        days, hours, minutes, secs = (float(part or 0) for part in found.groups())
        seconds = days * 86400 + hours * 3600 + minutes * 60 + secs
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError("expected a positive duration")
    return seconds


class SchedulerSpec(ComponentSpec):
    """`[scheduler]`: a registered scheduler (`name` + its params) and how the engine steps it."""

    interval: Literal["epoch", "step"] = Field(
        "epoch", description='Step the scheduler after every epoch, or after every optimizer step.'
    )
    warmup_steps: int | None = Field(
        None, ge=1, le=2**62, description='Optimizer steps of linear warm-up before the scheduler (interval = "step").'
    )
    warmup_epochs: int | None = Field(
        None, ge=1, le=1_000_000, description='Epochs of linear warm-up before the scheduler (interval = "epoch").'
    )
    warmup_ratio: float | None = Field(
        None, gt=0, lt=1, description="Warm-up as a fraction of the run's scheduler steps (either interval)."
    )
    warmup_start_factor: float = Field(
        0.001, gt=0, le=1, description="The warm-up starts at lr × this and rises linearly to lr."
    )

    @model_validator(mode="after")
    def _warmup_in_its_units(self) -> SchedulerSpec:
        given = [key for key in ("warmup_steps", "warmup_epochs", "warmup_ratio") if getattr(self, key) is not None]
        if len(given) > 1:
            raise ValueError(f"set one of {', '.join(given)}, not several")
        if self.warmup_steps is not None and self.interval != "step":
            raise ValueError('warmup_steps counts optimizer steps: set interval = "step" (or use warmup_epochs)')
        if self.warmup_epochs is not None and self.interval != "epoch":
            raise ValueError('warmup_epochs counts epochs: set interval = "epoch" (or use warmup_steps)')
        return self

    @property
    def warmup(self) -> bool:
        return any(value is not None for value in (self.warmup_steps, self.warmup_epochs, self.warmup_ratio))


_TOML_TYPES = {str: "string", bool: "boolean", int: "integer", float: "float", list: "array", dict: "table"}


def describe(value: Any) -> str:
    """A value as a message shows it: `0.1 (float)`, `'fast' (string)`, `table`; cut to
    `SHOWN_CHARS`, so a megabyte value shows as a line."""
    kind = _TOML_TYPES.get(type(value), type(value).__name__)
    if isinstance(value, (dict, list)):
        return kind
    if isinstance(value, bool):
        shown = "true" if value else "false"
    elif isinstance(value, int) and value.bit_length() > 128:  # repr() of a huge int can even fail
        shown = f"a {value.bit_length()}-bit number"
    else:
        shown = shorten(repr(value))
    return f"{shown} ({kind})"
