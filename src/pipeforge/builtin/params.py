"""Parameter models of the built-in components. Pure pydantic: importing this loads no torch."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeforge.registry import Params

# ---------------------------------------------------------------- optimizers and schedulers


class SGDParams(Params):
    lr: float = Field(0.01, gt=0, description="Learning rate.")
    momentum: float = Field(0.0, ge=0, description="Momentum factor.")
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty.")
    dampening: float = Field(0.0, ge=0, description="Dampening for momentum.")
    nesterov: bool = Field(False, description="Use Nesterov momentum (needs momentum > 0).")


class AdamParams(Params):
    lr: float = Field(0.001, gt=0, description="Learning rate.")
    betas: list[float] = Field(
        [0.9, 0.999], min_length=2, max_length=2, description="Coefficients for running averages."
    )
    eps: float = Field(1e-8, gt=0, description="Term added to the denominator.")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay.")


class AdamWParams(AdamParams):
    weight_decay: float = Field(0.01, ge=0, description="Decoupled weight decay.")


class StepLRParams(Params):
    step_size: int = Field(ge=1, description="Epochs between learning-rate decays.")
    gamma: float = Field(0.1, gt=0, description="Multiplicative decay factor.")


class CosineParams(Params):
    t_max: int | None = Field(None, ge=1, description="Epochs of one cosine cycle; default: trainer.epochs.")
    eta_min: float = Field(0.0, ge=0, description="Minimum learning rate.")


# ---------------------------------------------------------------- losses and metrics


class CrossEntropyParams(Params):
    label_smoothing: float = Field(0.0, ge=0, le=1, description="Label smoothing in [0, 1].")


class MSEParams(Params):
    """Mean squared error takes no parameters."""


class AccuracyParams(Params):
    top_k: int = Field(1, ge=1, description="Count a hit when the target is in the top k.")


# ---------------------------------------------------------------- callbacks


class TensorBoardParams(Params):
    log_every_n_steps: int = Field(
        1, ge=1, description="Log the training loss every N steps."
    )
    batch_tag: str = Field("Loss/train", description="Tag of the per-step training loss.")
    flush_every_s: float = Field(
        30.0, gt=0, description="Write the buffered per-step losses at least this often within an epoch (seconds)."
    )


# ---------------------------------------------------------------- synthetic data and MLP


class SyntheticClassificationParams(Params):
    n_train: int = Field(512, ge=1, description="Training samples.")
    n_val: int = Field(128, ge=1, description="Validation samples.")
    features: int = Field(16, ge=1, description="Input features per sample.")
    classes: int = Field(3, ge=2, description="Number of classes.")
    separation: float = Field(2.0, gt=0, description="Distance between class centres (noise std is 1).")


class MLPParams(Params):
    in_features: int = Field(ge=1, description="Input features.")
    hidden: list[int] = Field([64], description="Sizes of the hidden layers.")
    out_features: int | None = Field(
        None, ge=1, description="Outputs; default: the dataset's number of classes."
    )
    activation: Literal["relu", "tanh", "gelu"] = Field("relu", description="Hidden activation.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout after each hidden layer.")


# ---------------------------------------------------------------- transforms (need torchvision)


class ResizeParams(Params):
    size: list[int] = Field(min_length=1, max_length=2, description="[h, w], or [s] for the shorter side.")


class CropParams(Params):
    size: list[int] = Field(min_length=1, max_length=2, description="[h, w] or [s].")


class RandomResizedCropParams(CropParams):
    scale: list[float] = Field([0.08, 1.0], min_length=2, max_length=2, description="Area range.")
    ratio: list[float] = Field([0.75, 1.3333333], min_length=2, max_length=2, description="Aspect range.")


class FlipParams(Params):
    p: float = Field(0.5, ge=0, le=1, description="Probability of flipping.")


class NormalizeParams(Params):
    mean: list[float] = Field(min_length=1, description="Per-channel mean.")
    std: list[float] = Field(min_length=1, description="Per-channel standard deviation.")


class ConvertParams(Params):
    mode: Literal["RGB", "L"] = Field("RGB", description="PIL mode to convert images to.")
