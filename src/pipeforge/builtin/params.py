"""Parameter models of the built-in components. Pure pydantic: importing this loads no torch.

Every param has a type (strict, see `pipeforge.Params`) and bounds, so a value that would only
fail once a run has started (a negative width, std 0, beta 1.5) is refused by `validate`.
Upper bounds are generous: they keep a value out of what torch cannot do (or would take all
memory doing), not out of what is unusual.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from pipeforge.registry import Params

# Most features, hidden units or classes a built-in model or dataset takes.
MAX_WIDTH = 1_000_000
# Most samples a synthetic split draws, and most values all of its inputs may hold (1 GB).
MAX_SAMPLES = 10_000_000
MAX_VALUES = 2**28
# Largest image side a transform produces.
MAX_SIDE = 16_384

Width = Annotated[int, Field(ge=1, le=MAX_WIDTH)]
Side = Annotated[int, Field(ge=1, le=MAX_SIDE)]

# ---------------------------------------------------------------- optimizers and schedulers


class SGDParams(Params):
    lr: float = Field(0.01, gt=0, description="Learning rate.")
    momentum: float = Field(0.0, ge=0, le=1, description="Momentum factor, in [0, 1].")
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty.")
    dampening: float = Field(0.0, ge=0, le=1, description="Dampening for momentum, in [0, 1].")
    nesterov: bool = Field(False, description="Use Nesterov momentum (needs momentum > 0 and dampening 0).")

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> SGDParams:
        # torch.optim.SGD refuses this only when the optimizer is built, after the data.
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov = true needs momentum > 0 and dampening = 0")
        return self


class AdamParams(Params):
    lr: float = Field(0.001, gt=0, description="Learning rate.")
    betas: list[Annotated[float, Field(ge=0, lt=1)]] = Field(
        [0.9, 0.999], min_length=2, max_length=2, description="Coefficients for running averages, each in [0, 1)."
    )
    eps: float = Field(1e-8, gt=0, description="Term added to the denominator.")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay.")


class AdamWParams(AdamParams):
    weight_decay: float = Field(0.01, ge=0, description="Decoupled weight decay.")


# Scheduler lengths count the scheduler's own steps: epochs, or optimizer steps with
# `interval = "step"`. Defaults come from the run (`BuildContext.schedule_length`).


class StepLRParams(Params):
    step_size: int = Field(ge=1, description="Scheduler steps between learning-rate decays.")
    gamma: float = Field(0.1, gt=0, le=1, description="Multiplicative decay factor.")


class MultiStepParams(Params):
    milestones: list[int] = Field(min_length=1, description="Scheduler steps at which the lr is multiplied by gamma.")
    gamma: float = Field(0.1, gt=0, le=1, description="Multiplicative decay factor.")


class CosineParams(Params):
    t_max: int | None = Field(None, ge=1, description="Scheduler steps of the cosine; default: the whole run after warm-up.")
    eta_min: float = Field(0.0, ge=0, description="Minimum learning rate.")


class LinearDecayParams(Params):
    end_factor: float = Field(0.0, ge=0, le=1, description="The lr ends at lr × this.")
    total_iters: int | None = Field(None, ge=1, description="Scheduler steps of the decay; default: the whole run after warm-up.")


class OneCycleParams(Params):
    max_lr: float = Field(gt=0, description="Peak learning rate.")
    pct_start: float = Field(0.3, gt=0, lt=1, description="Fraction of the cycle spent increasing the lr.")
    div_factor: float = Field(25.0, gt=0, description="Initial lr = max_lr / div_factor.")
    final_div_factor: float = Field(1e4, gt=0, description="Final lr = initial lr / final_div_factor.")
    anneal_strategy: Literal["cos", "linear"] = Field("cos", description="How the lr anneals.")


class PlateauParams(Params):
    monitor: str = Field("val_loss", min_length=1, description="The metrics.jsonl key to watch.")
    mode: Literal["auto", "min", "max"] = Field("auto", description='"auto": min for keys ending in "loss".')
    factor: float = Field(0.1, gt=0, lt=1, description="lr × factor when the metric plateaus.")
    patience: int = Field(10, ge=0, description="Epochs without improvement before reducing.")
    threshold: float = Field(1e-4, ge=0, description="Least relative change that counts as improvement.")
    cooldown: int = Field(0, ge=0, description="Epochs to wait after a reduction.")
    min_lr: float = Field(0.0, ge=0, description="Lower bound on the lr.")


class ConstantParams(Params):
    factor: float = Field(1.0, gt=0, le=1, description="lr × factor for the first total_iters steps, then lr.")
    total_iters: int = Field(0, ge=0, description="Scheduler steps at lr × factor (0: constant lr, e.g. warm-up only).")


# ---------------------------------------------------------------- losses and metrics


class CrossEntropyParams(Params):
    label_smoothing: float = Field(0.0, ge=0, le=1, description="Label smoothing in [0, 1].")


class MSEParams(Params):
    """Mean squared error takes no parameters."""


class AccuracyParams(Params):
    top_k: int = Field(1, ge=1, le=MAX_WIDTH, description="Count a hit when the target is in the top k "
                       "(at most the number of classes).")

    @property
    def metric_name(self) -> str:
        """The key suffix the metric reports under: `val_accuracy`, `val_top3_accuracy`."""
        return "accuracy" if self.top_k == 1 else f"top{self.top_k}_accuracy"


# ---------------------------------------------------------------- callbacks


class TensorBoardParams(Params):
    log_every_n_steps: int = Field(
        1, ge=1, description="Log the training loss every N steps."
    )
    batch_tag: str = Field("Loss/train", min_length=1, max_length=200, description="Tag of the per-step training loss.")
    flush_every_s: float = Field(
        30.0, gt=0, le=1e7, description="Write the buffered per-step losses at least this often within an epoch (seconds)."
    )


# ---------------------------------------------------------------- synthetic data and MLP


class SyntheticClassificationParams(Params):
    n_train: int = Field(512, ge=1, le=MAX_SAMPLES, description="Training samples.")
    n_val: int = Field(128, ge=1, le=MAX_SAMPLES, description="Validation samples.")
    features: int = Field(16, ge=1, le=MAX_WIDTH, description="Input features per sample.")
    classes: int = Field(3, ge=2, le=MAX_WIDTH, description="Number of classes.")
    separation: float = Field(2.0, gt=0, le=1e6, description="Distance between class centres (noise std is 1).")

    @model_validator(mode="after")
    def _fits_in_memory(self) -> SyntheticClassificationParams:
        values = (self.n_train + self.n_val) * self.features
        if values > MAX_VALUES:
            raise ValueError(f"(n_train + n_val) × features is {values:,} values; at most {MAX_VALUES:,} (1 GB)")
        return self


class MLPParams(Params):
    in_features: int = Field(ge=1, le=MAX_WIDTH, description="Input features.")
    hidden: list[Width] = Field([64], max_length=1000, description="Sizes of the hidden layers.")
    out_features: int | None = Field(
        None, ge=1, le=MAX_WIDTH, description="Outputs; default: the dataset's number of classes."
    )
    activation: Literal["relu", "tanh", "gelu"] = Field("relu", description="Hidden activation.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout after each hidden layer.")


# ---------------------------------------------------------------- transforms (need torchvision)


class ResizeParams(Params):
    size: list[Side] = Field(min_length=1, max_length=2, description="[h, w], or [s] for the shorter side.")


class CropParams(Params):
    size: list[Side] = Field(min_length=1, max_length=2, description="[h, w] or [s].")


class RandomResizedCropParams(CropParams):
    scale: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        [0.08, 1.0], min_length=2, max_length=2, description="Area range [low, high], within (0, 1]."
    )
    ratio: list[Annotated[float, Field(gt=0, le=100)]] = Field(
        [0.75, 1.3333333], min_length=2, max_length=2, description="Aspect range [low, high]."
    )

    @field_validator("scale", "ratio")
    @classmethod
    def _low_then_high(cls, bounds: list[float]) -> list[float]:
        if bounds[0] > bounds[1]:
            raise ValueError(f"expected [low, high] with low <= high, found {bounds}")
        return bounds


class FlipParams(Params):
    p: float = Field(0.5, ge=0, le=1, description="Probability of flipping.")


class NormalizeParams(Params):
    mean: list[Annotated[float, Field(ge=-1e6, le=1e6)]] = Field(
        min_length=1, max_length=64, description="Per-channel mean."
    )
    std: list[Annotated[float, Field(gt=0, le=1e6)]] = Field(
        min_length=1, max_length=64, description="Per-channel standard deviation, each > 0."
    )

    @model_validator(mode="after")
    def _one_per_channel(self) -> NormalizeParams:
        if len(self.mean) != len(self.std) and 1 not in (len(self.mean), len(self.std)):
            raise ValueError(f"mean has {len(self.mean)} values and std {len(self.std)}: expected one per "
                             "channel in both (or a single value for every channel)")
        return self


class ConvertParams(Params):
    mode: Literal["RGB", "L"] = Field("RGB", description="PIL mode to convert images to.")
