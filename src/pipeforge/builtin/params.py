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

# The catalog's models live in optim_params (optimizers, schedulers) and loss_params (losses);
# these names stay importable from here.
from pipeforge.builtin.loss_params import CrossEntropyParams, MSEParams  # noqa: F401
from pipeforge.builtin.optim_params import (  # noqa: F401
    AdamParams, AdamWParams, ConstantParams, CosineParams, LinearDecayParams, MultiStepParams, OneCycleParams,
    PlateauParams, SGDParams, StepLRParams,
)

# Most features, hidden units or classes a built-in model or dataset takes.
MAX_WIDTH = 1_000_000
# Most samples a synthetic split draws, and most values all of its inputs may hold (1 GB).
MAX_SAMPLES = 10_000_000
MAX_VALUES = 2**28
# Largest image side a transform produces.
MAX_SIDE = 16_384

Width = Annotated[int, Field(ge=1, le=MAX_WIDTH)]
Side = Annotated[int, Field(ge=1, le=MAX_SIDE)]

# ---------------------------------------------------------------- metrics


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
