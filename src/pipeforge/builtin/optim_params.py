"""Parameter models of the built-in optimizers and schedulers: torch.optim and
torch.optim.lr_scheduler by name. Pure pydantic: importing this loads no torch.

Each model is written by hand after the signature of the torch class it builds (names, defaults,
types), with bounds and a description per argument; tests/test_catalog.py compares every one
with `inspect.signature` of the pinned torch, and lists each deliberate difference with its
reason, so a torch upgrade that adds or renames an argument fails a test. Arguments the engine
supplies (`params`, `optimizer`, `last_epoch`) and those that have no meaning in pipeforge's
loop (`maximize`, `capturable`, `differentiable`) are not params.

Every optimizer also takes pipeforge's parameter-group options: `lr_groups` (a learning rate per
named submodule) and, where it has a weight decay, `no_decay` (parameters trained without it).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from pipeforge.registry import METRIC_KEY, Params

# ---------------------------------------------------------------- shared pieces

# A submodule's dotted name as `model.named_modules()` gives it ("encoder.layer1", "0").
ModulePath = Annotated[str, Field(min_length=1, max_length=500, pattern=r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")]
NamePattern = Annotated[str, Field(min_length=1, max_length=200)]
PositiveLr = Annotated[float, Field(gt=0, le=1e6)]
Beta = Annotated[float, Field(ge=0, lt=1)]
Momentum = Annotated[float, Field(ge=0, le=1)]

NO_DECAY = ('Parameters trained with weight decay 0: those whose name (e.g. "fc1.bias") or whose module\'s '
            'class (e.g. "BatchNorm2d", "LayerNorm") contains one of these, ignoring case; e.g. ["bias", "norm"].')
LR_GROUPS = ('A learning rate per submodule, by its name in the model, e.g. {backbone = 0.001}; a '
             "parameter takes the most specific name that holds it, the rest take lr. Schedulers scale "
             "every group alike.")


def _no_decay() -> Any:
    return Field([], max_length=100, description=NO_DECAY)


def _lr_groups() -> Any:
    return Field({}, max_length=1000, description=LR_GROUPS)


def _betas(default: tuple[float, float] = (0.9, 0.999)) -> Any:
    return Field(list(default), min_length=2, max_length=2,
                 description="Coefficients of the running averages of the gradient and its square, each in [0, 1).")


def _foreach() -> Any:
    return Field(None, description="Use the multi-tensor (foreach) implementation; unset: torch decides.")


def _fused() -> Any:
    return Field(None, description="Use the fused kernel implementation; unset: torch decides.")


class CatalogParams(Params):
    """Base of the catalog's params models: each builds its validator when first used, not at
    import, so that discovering the catalog (list-plugins, show, validate) stays cheap."""

    model_config = ConfigDict(defer_build=True)


class OptimizerParams(CatalogParams):
    """Base of the built-in optimizers' params. Each has `lr` and `lr_groups`, and `no_decay`
    where it has a weight decay (declared in each model, after torch's own arguments)."""

    @model_validator(mode="after")
    def _not_fused_and_foreach(self) -> OptimizerParams:
        # torch refuses this only when the optimizer is built, after the data.
        if getattr(self, "fused", None) and getattr(self, "foreach", None):
            raise ValueError("set fused or foreach, not both")
        return self


# ---------------------------------------------------------------- optimizers


class SGDParams(OptimizerParams):
    lr: float = Field(0.01, gt=0, description="Learning rate.")
    momentum: float = Field(0.0, ge=0, le=1, description="Momentum factor, in [0, 1].")
    dampening: float = Field(0.0, ge=0, le=1, description="Dampening for momentum, in [0, 1].")
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty.")
    nesterov: bool = Field(False, description="Use Nesterov momentum (needs momentum > 0 and dampening 0).")
    foreach: bool | None = _foreach()
    fused: bool | None = _fused()
    no_decay: list[NamePattern] = _no_decay()
    lr_groups: dict[ModulePath, PositiveLr] = _lr_groups()

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> SGDParams:
        # torch.optim.SGD refuses this only when the optimizer is built, after the data.
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov = true needs momentum > 0 and dampening = 0")
        return self


class AdamParams(OptimizerParams):
    lr: float = Field(0.001, gt=0, description="Learning rate.")
    betas: list[Beta] = _betas()
    eps: float = Field(1e-8, gt=0, description="Term added to the denominator.")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay (an L2 penalty; decoupled with decoupled_weight_decay).")
    amsgrad: bool = Field(False, description="Use the AMSGrad variant.")
    foreach: bool | None = _foreach()
    fused: bool | None = _fused()
    decoupled_weight_decay: bool = Field(False, description="Decay the weights directly, as AdamW does.")
    no_decay: list[NamePattern] = _no_decay()
    lr_groups: dict[ModulePath, PositiveLr] = _lr_groups()


class AdamWParams(OptimizerParams):
    lr: float = Field(0.001, gt=0, description="Learning rate.")
    betas: list[Beta] = _betas()
    eps: float = Field(1e-8, gt=0, description="Term added to the denominator.")
    weight_decay: float = Field(0.01, ge=0, description="Decoupled weight decay.")
    amsgrad: bool = Field(False, description="Use the AMSGrad variant.")
    foreach: bool | None = _foreach()
    fused: bool | None = _fused()
    no_decay: list[NamePattern] = _no_decay()
    lr_groups: dict[ModulePath, PositiveLr] = _lr_groups()


class AdamaxParams(OptimizerParams):
    lr: float = Field(0.002, gt=0, description="Learning rate.")
    betas: list[Beta] = _betas()
    eps: float = Field(1e-8, gt=0, description="Term added to the denominator.")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay (L2 penalty).")
    foreach: bool | None = _foreach()
    no_decay: list[NamePattern] = _no_decay()
    lr_groups: dict[ModulePath, PositiveLr] = _lr_groups()


class NAdamParams(OptimizerParams):
    lr: float = Field(0.002, gt=0, description="Learning rate.")
    betas: list[Beta] = _betas()
    eps: float = Field(1e-8, gt=0, description="Term added to the denominator.")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay (L2 penalty; decoupled with decoupled_weight_decay).")
    momentum_decay: float = Field(0.004, ge=0, description="Momentum decay (psi).")
    decoupled_weight_decay: bool = Field(False, description="Decay the weights directly, as AdamW does.")
    foreach: bool | None = _foreach()
    no_decay: list[NamePattern] = _no_decay()
    lr_groups: dict[ModulePath, PositiveLr] = _lr_groups()


class RAdamParams(OptimizerParams):
    lr: float = Field(0.001, gt=0, description="Learning rate.")
    betas: list[Beta] = _betas()
    eps: float = Field(1e-8, gt=0, description="Term added to the denominator.")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay (L2 penalty; decoupled with decoupled_weight_decay).")
    decoupled_weight_decay: bool = Field(False, description="Decay the weights directly, as AdamW does.")
    foreach: bool | None = _foreach()
    no_decay: list[NamePattern] = _no_decay()
    lr_groups: dict[ModulePath, PositiveLr] = _lr_groups()


class RMSpropParams(OptimizerParams):
    lr: float = Field(0.01, gt=0, description="Learning rate.")
    alpha: float = Field(0.99, ge=0, le=1, description="Smoothing constant of the squared-gradient average.")
    eps: float = Field(1e-8, gt=0, description="Term added to the denominator.")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay (L2 penalty).")
    momentum: float = Field(0.0, ge=0, le=1, description="Momentum factor.")
    centered: bool = Field(False, description="Normalise by an estimate of the gradient's variance.")
    foreach: bool | None = _foreach()
    no_decay: list[NamePattern] = _no_decay()
    lr_groups: dict[ModulePath, PositiveLr] = _lr_groups()


class AdagradParams(OptimizerParams):
    lr: float = Field(0.01, gt=0, description="Learning rate.")
    lr_decay: float = Field(0.0, ge=0, description="Learning-rate decay.")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay (L2 penalty).")
    initial_accumulator_value: float = Field(0.0, ge=0, description="Starting value of the squared-gradient sums.")
    eps: float = Field(1e-10, gt=0, description="Term added to the denominator.")
    foreach: bool | None = _foreach()
    fused: bool | None = _fused()
    no_decay: list[NamePattern] = _no_decay()
    lr_groups: dict[ModulePath, PositiveLr] = _lr_groups()


class AdadeltaParams(OptimizerParams):
    lr: float = Field(1.0, gt=0, description="Coefficient that scales delta before it is applied.")
    rho: float = Field(0.9, ge=0, le=1, description="Coefficient of the running average of squared gradients.")
    eps: float = Field(1e-6, gt=0, description="Term added to the denominator.")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay (L2 penalty).")
    foreach: bool | None = _foreach()
    no_decay: list[NamePattern] = _no_decay()
    lr_groups: dict[ModulePath, PositiveLr] = _lr_groups()


class AdafactorParams(OptimizerParams):
    lr: float = Field(0.01, gt=0, description="Learning rate.")
    beta2_decay: float = Field(-0.8, le=0, description="Decay rate of beta2 (the second moment's running average).")
    eps1: float | None = Field(None, gt=0, description="Term added to the denominator (torch's eps[0]); unset: "
                                                       "the machine epsilon of the parameters' dtype.")
    eps2: float = Field(1e-3, gt=0, description="Lower bound of the update's relative scale (torch's eps[1]).")
    d: float = Field(1.0, gt=0, description="Clipping threshold of the update's root mean square.")
    weight_decay: float = Field(0.0, ge=0, description="Decoupled weight decay.")
    foreach: bool | None = _foreach()
    no_decay: list[NamePattern] = _no_decay()
    lr_groups: dict[ModulePath, PositiveLr] = _lr_groups()


class ASGDParams(OptimizerParams):
    lr: float = Field(0.01, gt=0, description="Learning rate.")
    lambd: float = Field(1e-4, ge=0, description="Decay term.")
    alpha: float = Field(0.75, ge=0, description="Power of the eta update.")
    t0: float = Field(1e6, ge=0, description="Step at which averaging starts.")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay (L2 penalty).")
    foreach: bool | None = _foreach()
    no_decay: list[NamePattern] = _no_decay()
    lr_groups: dict[ModulePath, PositiveLr] = _lr_groups()


class RpropParams(OptimizerParams):
    lr: float = Field(0.01, gt=0, description="Initial step size.")
    etas: list[Annotated[float, Field(gt=0)]] = Field(
        [0.5, 1.2], min_length=2, max_length=2, description="[decrease, increase] factors, 0 < decrease < 1 < increase."
    )
    step_sizes: list[Annotated[float, Field(gt=0)]] = Field(
        [1e-6, 50.0], min_length=2, max_length=2, description="[smallest, largest] step size."
    )
    foreach: bool | None = _foreach()
    lr_groups: dict[ModulePath, PositiveLr] = _lr_groups()

    @model_validator(mode="after")
    def _ordered(self) -> RpropParams:
        if not self.etas[0] < 1 < self.etas[1]:
            raise ValueError(f"etas must be [decrease, increase] with 0 < decrease < 1 < increase, found {self.etas}")
        if self.step_sizes[0] > self.step_sizes[1]:
            raise ValueError(f"step_sizes must be [smallest, largest], found {self.step_sizes}")
        return self


class SparseAdamParams(OptimizerParams):
    lr: float = Field(0.001, gt=0, description="Learning rate.")
    betas: list[Beta] = _betas()
    eps: float = Field(1e-8, gt=0, description="Term added to the denominator.")
    lr_groups: dict[ModulePath, PositiveLr] = _lr_groups()


class MuonParams(OptimizerParams):
    lr: float = Field(0.001, gt=0, description="Learning rate of the Muon-trained (2-D) weights.")
    weight_decay: float = Field(0.1, ge=0, description="Decoupled weight decay of the Muon-trained weights.")
    momentum: float = Field(0.95, ge=0, le=1, description="Momentum factor.")
    nesterov: bool = Field(True, description="Use Nesterov momentum.")
    ns_coefficients: list[Annotated[float, Field(ge=-100, le=100)]] = Field(
        [3.4445, -4.775, 2.0315], min_length=3, max_length=3,
        description="[a, b, c] of the Newton-Schulz orthogonalisation.",
    )
    eps: float = Field(1e-7, gt=0, description="Term added to the norm in the orthogonalisation.")
    ns_steps: int = Field(5, ge=1, le=99, description="Newton-Schulz iterations per step.")
    adjust_lr_fn: Literal["original", "match_rms_adamw", "spectral_unclamped"] | None = Field(
        None, description='How the lr is scaled to a matrix\'s shape; unset: "original".'
    )
    adamw_lr: float | None = Field(None, gt=0, description="Learning rate of the AdamW-trained parameters; unset: "
                                                          "lr (lr_groups scale it alike).")
    adamw_betas: list[Beta] = _betas()
    adamw_eps: float = Field(1e-8, gt=0, description="AdamW's term added to the denominator.")
    adamw_weight_decay: float = Field(0.01, ge=0, description="Decoupled weight decay of the AdamW-trained parameters.")
    adamw_params: list[NamePattern] = Field(
        [], max_length=100, description="2-D parameters trained by AdamW too (e.g. the output layer or an "
        "embedding), matched as no_decay matches. Parameters that are not 2-D always are.",
    )
    no_decay: list[NamePattern] = _no_decay()
    lr_groups: dict[ModulePath, PositiveLr] = _lr_groups()


LBFGS_REFUSED = (
    "'lbfgs' (torch.optim.LBFGS) cannot be driven by pipeforge's loop: each of its steps calls a "
    "closure that recomputes the loss and gradients several times, and the loop steps an optimizer "
    "once per batch without one; use another optimizer (e.g. adam, or sgd with momentum)"
)


class LBFGSParams(CatalogParams):
    """Refused whatever its params: see `LBFGS_REFUSED`."""

    @model_validator(mode="before")
    @classmethod
    def _refused(cls, data: Any) -> Any:
        raise ValueError(LBFGS_REFUSED)


# ---------------------------------------------------------------- schedulers

# Scheduler lengths count the scheduler's own steps: epochs, or optimizer steps with
# `interval = "step"`. Defaults come from the run (`BuildContext.schedule_length`).


class StepLRParams(CatalogParams):
    step_size: int = Field(ge=1, description="Scheduler steps between learning-rate decays.")
    gamma: float = Field(0.1, gt=0, le=1, description="Multiplicative decay factor.")


class MultiStepParams(CatalogParams):
    milestones: list[int] = Field(min_length=1, description="Scheduler steps at which the lr is multiplied by gamma.")
    gamma: float = Field(0.1, gt=0, le=1, description="Multiplicative decay factor.")


class ConstantParams(CatalogParams):
    factor: float = Field(1.0, gt=0, le=1, description="lr × factor for the first total_iters steps, then lr.")
    total_iters: int = Field(0, ge=0, description="Scheduler steps at lr × factor (0: constant lr, e.g. warm-up only).")


class LinearDecayParams(CatalogParams):
    start_factor: float = Field(1.0, gt=0, le=1, description="The lr starts at lr × this.")
    end_factor: float = Field(0.0, ge=0, le=1, description="The lr ends at lr × this.")
    total_iters: int | None = Field(None, ge=1, description="Scheduler steps of the change; default: the whole run after warm-up.")


class ExponentialParams(CatalogParams):
    gamma: float = Field(gt=0, le=10, description="The lr is multiplied by gamma every scheduler step.")


class CosineParams(CatalogParams):
    t_max: int | None = Field(None, ge=1, description="Scheduler steps of the cosine; default: the whole run after warm-up.")
    eta_min: float = Field(0.0, ge=0, description="Minimum learning rate.")


class CosineRestartsParams(CatalogParams):
    t_0: int = Field(ge=1, description="Scheduler steps until the first restart.")
    t_mult: int = Field(1, ge=1, le=1000, description="Each period is t_mult times the previous one.")
    eta_min: float = Field(0.0, ge=0, description="Minimum learning rate.")


class CyclicParams(CatalogParams):
    base_lr: float | None = Field(None, gt=0, description="Lower bound of the cycle; default: the optimizer's lr. "
                                                          "With lr_groups, each group's bounds keep its ratio to lr.")
    max_lr: float = Field(gt=0, description="Upper bound of the cycle.")
    step_size_up: int = Field(2000, ge=1, description="Scheduler steps of the increasing half of a cycle.")
    step_size_down: int | None = Field(None, ge=1, description="Scheduler steps of the decreasing half; default: step_size_up.")
    mode: Literal["triangular", "triangular2", "exp_range"] = Field(
        "triangular", description='"triangular2" halves the amplitude every cycle; "exp_range" scales it by gamma**step.'
    )
    gamma: float = Field(1.0, gt=0, le=1, description='Decay of the amplitude in "exp_range" mode.')
    cycle_momentum: bool = Field(True, description="Cycle the momentum (or Adam's beta1) inversely to the lr.")
    base_momentum: float = Field(0.8, ge=0, le=1, description="Lower bound of the momentum cycle.")
    max_momentum: float = Field(0.9, ge=0, le=1, description="Upper bound of the momentum cycle.")

    @model_validator(mode="after")
    def _bounds(self) -> CyclicParams:
        if self.base_lr is not None and self.base_lr > self.max_lr:
            raise ValueError(f"base_lr ({self.base_lr}) is above max_lr ({self.max_lr})")
        if self.base_momentum > self.max_momentum:
            raise ValueError(f"base_momentum ({self.base_momentum}) is above max_momentum ({self.max_momentum})")
        return self


class OneCycleParams(CatalogParams):
    max_lr: float = Field(gt=0, description="Peak learning rate (with lr_groups, each group's peak keeps its ratio to lr).")
    pct_start: float = Field(0.3, gt=0, lt=1, description="Fraction of the cycle spent increasing the lr.")
    anneal_strategy: Literal["cos", "linear"] = Field("cos", description="How the lr anneals.")
    cycle_momentum: bool = Field(True, description="Cycle the momentum (or Adam's beta1) inversely to the lr.")
    base_momentum: float = Field(0.85, ge=0, le=1, description="Lower bound of the momentum cycle.")
    max_momentum: float = Field(0.95, ge=0, le=1, description="Upper bound of the momentum cycle.")
    div_factor: float = Field(25.0, gt=0, description="Initial lr = max_lr / div_factor.")
    final_div_factor: float = Field(1e4, gt=0, description="Final lr = initial lr / final_div_factor.")
    three_phase: bool = Field(False, description="Anneal back to the initial lr, then to the final lr (three phases).")

    @model_validator(mode="after")
    def _bounds(self) -> OneCycleParams:
        if self.base_momentum > self.max_momentum:
            raise ValueError(f"base_momentum ({self.base_momentum}) is above max_momentum ({self.max_momentum})")
        return self


class PolynomialParams(CatalogParams):
    total_iters: int | None = Field(None, ge=1, description="Scheduler steps of the decay to 0; default: the whole run after warm-up.")
    power: float = Field(1.0, gt=0, le=1000, description="Power of the polynomial.")


class PlateauParams(CatalogParams):
    monitor: str = Field("val_loss", min_length=1, json_schema_extra=METRIC_KEY, description="The metrics.jsonl key to watch.")
    mode: Literal["auto", "min", "max"] = Field("auto", description='"auto": min for keys ending in "loss".')
    factor: float = Field(0.1, gt=0, lt=1, description="lr × factor when the metric plateaus.")
    patience: int = Field(10, ge=0, description="Epochs without improvement before reducing.")
    threshold: float = Field(1e-4, ge=0, description="Least change that counts as improvement.")
    threshold_mode: Literal["rel", "abs"] = Field("rel", description='Whether threshold is relative ("rel") or absolute.')
    cooldown: int = Field(0, ge=0, description="Epochs to wait after a reduction.")
    min_lr: float = Field(0.0, ge=0, description="Lower bound on the lr.")
    eps: float = Field(1e-8, ge=0, description="A reduction smaller than this is not made.")
