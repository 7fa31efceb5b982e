"""Builders for the built-in optimizers and schedulers (imported only when a run builds).

Optimizers are torch.optim's, given the model's parameters in groups when the recipe asks for
`no_decay` or `lr_groups` (see `parameter_groups`). Schedulers are torch.optim.lr_scheduler's;
their default lengths come from the run (`context.schedule_length`), and the engine composes
them with a warm-up and steps them per epoch or per optimizer step (`pipeforge.step`).
"""

from __future__ import annotations

import difflib
import logging
from typing import Any, Iterable

import torch
from torch.optim import lr_scheduler

from pipeforge.builtin import optim_params as p
from pipeforge.context import BuildContext
from pipeforge.errors import PluginError, Problem, RecipeError

log = logging.getLogger("pipeforge")

# ---------------------------------------------------------------- parameter groups


def parameter_groups(model: torch.nn.Module, params: Any, only: set[str] | None = None,
                     check: bool = True) -> list[Any]:
    """What a torch optimizer is given for `model` under `params`' group options.

    Without `no_decay` and `lr_groups`: the model's parameters, as one group. Otherwise one
    group per (learning rate, decay) combination: a parameter inside a submodule named in
    `lr_groups` (the most specific name wins) takes that lr, and one matched by `no_decay`
    takes weight decay 0; groups at the optimizer's own lr come first. `only` limits the
    groups to the parameters of those names (an optimizer that splits a model, like muon).
    With `check`, an `lr_groups` name that is not a submodule with parameters is a `RecipeError`
    naming `optimizer.lr_groups.<name>`, and a `no_decay` pattern that matches nothing a warning.
    """
    no_decay = [pattern.lower() for pattern in getattr(params, "no_decay", [])]
    lr_groups: dict[str, float] = params.lr_groups
    if check:
        _check_lr_groups(model, lr_groups)
        for pattern in no_decay:
            if not any(matches([pattern], name, model) for name, _ in model.named_parameters()):
                log.warning("optimizer.no_decay: '%s' matches no parameter of the model", pattern)
    if not no_decay and not lr_groups and only is None:
        return list(model.parameters())
    groups: dict[tuple[str | None, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if only is not None and name not in only:
            continue
        owner = max((key for key in lr_groups if name.startswith(key + ".")), key=len, default=None)
        exempt = bool(no_decay) and matches(no_decay, name, model)
        groups.setdefault((owner, exempt), []).append(param)
    ordered = sorted(groups.items(), key=lambda item: item[0][0] is not None)  # stable: first seen first
    result = []
    for (owner, exempt), members in ordered:
        group: dict[str, Any] = {"params": members}
        if owner is not None:
            group["lr"] = lr_groups[owner]
        if exempt:
            group["weight_decay"] = 0.0
        result.append(group)
    return result


def matches(patterns: Iterable[str], name: str, model: torch.nn.Module) -> bool:
    """Whether a parameter is matched by name patterns (lower case): a pattern occurs in its
    name, or in the class name of the module that holds it (e.g. "norm" in "BatchNorm2d")."""
    holder = type(model.get_submodule(name.rpartition(".")[0])).__name__.lower()
    lowered = name.lower()
    return any(pattern in lowered or pattern in holder for pattern in patterns)


def _check_lr_groups(model: torch.nn.Module, lr_groups: dict[str, float]) -> None:
    problems = []
    modules = dict(model.named_modules())
    for key in lr_groups:
        if key not in modules:
            close = difflib.get_close_matches(key, [name for name in modules if name], n=1, cutoff=0.6)
            top = ", ".join(name for name, _ in model.named_children()) or "none"
            hint = f"did you mean '{close[0]}'?" if close else f"its top-level submodules: {top}"
            problems.append(Problem(f"optimizer.lr_groups.{key}", f"the model has no submodule '{key}'", hint))
        elif next(modules[key].parameters(), None) is None:
            problems.append(Problem(f"optimizer.lr_groups.{key}", f"the model's submodule '{key}' "
                                                                  f"({type(modules[key]).__name__}) has no parameters"))
    if problems:
        raise RecipeError(problems)


def _kwargs(params: p.OptimizerParams, *leave_out: str) -> dict[str, Any]:
    """torch's keyword arguments from the params: pipeforge's own options left out, pairs as tuples."""
    kwargs = params.model_dump(exclude={"no_decay", "lr_groups", *leave_out})
    for key in ("betas", "etas", "step_sizes", "ns_coefficients"):
        if key in kwargs:
            kwargs[key] = tuple(kwargs[key])
    return kwargs


def _plain(cls: type[torch.optim.Optimizer], params: p.OptimizerParams, context: BuildContext) -> torch.optim.Optimizer:
    return cls(parameter_groups(context.model, params), **_kwargs(params))


# ---------------------------------------------------------------- optimizers


def build_sgd(params: p.SGDParams, context: BuildContext) -> torch.optim.Optimizer:
    return _plain(torch.optim.SGD, params, context)


def build_adam(params: p.AdamParams, context: BuildContext) -> torch.optim.Optimizer:
    return _plain(torch.optim.Adam, params, context)


def build_adamw(params: p.AdamWParams, context: BuildContext) -> torch.optim.Optimizer:
    return _plain(torch.optim.AdamW, params, context)


def build_adamax(params: p.AdamaxParams, context: BuildContext) -> torch.optim.Optimizer:
    return _plain(torch.optim.Adamax, params, context)


def build_nadam(params: p.NAdamParams, context: BuildContext) -> torch.optim.Optimizer:
    return _plain(torch.optim.NAdam, params, context)


def build_radam(params: p.RAdamParams, context: BuildContext) -> torch.optim.Optimizer:
    return _plain(torch.optim.RAdam, params, context)


def build_rmsprop(params: p.RMSpropParams, context: BuildContext) -> torch.optim.Optimizer:
    return _plain(torch.optim.RMSprop, params, context)


def build_adagrad(params: p.AdagradParams, context: BuildContext) -> torch.optim.Optimizer:
    return _plain(torch.optim.Adagrad, params, context)


def build_adadelta(params: p.AdadeltaParams, context: BuildContext) -> torch.optim.Optimizer:
    return _plain(torch.optim.Adadelta, params, context)


def build_asgd(params: p.ASGDParams, context: BuildContext) -> torch.optim.Optimizer:
    return _plain(torch.optim.ASGD, params, context)


def build_rprop(params: p.RpropParams, context: BuildContext) -> torch.optim.Optimizer:
    return _plain(torch.optim.Rprop, params, context)


def build_adafactor(params: p.AdafactorParams, context: BuildContext) -> torch.optim.Optimizer:
    kwargs = _kwargs(params, "eps1", "eps2")
    return torch.optim.Adafactor(parameter_groups(context.model, params), eps=(params.eps1, params.eps2), **kwargs)


def build_sparse_adam(params: p.SparseAdamParams, context: BuildContext) -> torch.optim.Optimizer:
    """SparseAdam updates only parameters whose gradients are sparse: the weights of
    `nn.Embedding` / `nn.EmbeddingBag` built with `sparse=True`. Any other trainable parameter
    would fail at its first step, so it is refused here."""
    model = context.model
    sparse = {name for name, module in model.named_modules()
              if isinstance(module, (torch.nn.Embedding, torch.nn.EmbeddingBag)) and module.sparse}
    dense = [name for name, param in model.named_parameters()
             if param.requires_grad and name.rpartition(".")[0] not in sparse]
    if dense:
        shown = ", ".join(dense[:3]) + (f" and {len(dense) - 3} more" if len(dense) > 3 else "")
        raise RecipeError([Problem("optimizer.name", "'sparse_adam' needs sparse gradients: every trainable "
                                   "parameter must belong to an nn.Embedding or nn.EmbeddingBag built with "
                                   f"sparse=True, and the model's {shown} {'is' if len(dense) == 1 else 'are'} "
                                   "dense", "use adam (or freeze the dense parameters)")])
    return _plain(torch.optim.SparseAdam, params, context)


def build_muon(params: p.MuonParams, context: BuildContext) -> torch.optim.Optimizer:
    """Muon for the model's 2-D weight matrices, AdamW for every other parameter (biases,
    norms, and 2-D ones matched by `adamw_params`), as one optimizer (`MuonWithAdamW`)."""
    model = context.model
    adamw_patterns = [pattern.lower() for pattern in params.adamw_params]
    names = [name for name, _ in model.named_parameters()]
    orthogonal = {name for name, param in model.named_parameters()
                  if param.ndim == 2 and not (adamw_patterns and matches(adamw_patterns, name, model))}
    if not orthogonal:
        raise RecipeError([Problem("optimizer.name", "'muon' trains 2-D weight matrices, and the model has none "
                                   "(left after adamw_params)", "use adamw")])
    muon_kwargs = _kwargs(params, "adamw_lr", "adamw_betas", "adamw_eps", "adamw_weight_decay", "adamw_params")
    muon = torch.optim.Muon(parameter_groups(model, params, only=orthogonal), **muon_kwargs)
    rest = set(names) - orthogonal
    adamw = None
    if rest:
        adamw_lr = params.adamw_lr or params.lr
        groups = parameter_groups(model, params, only=rest, check=False)
        for group in groups:
            if "lr" in group:  # an lr_groups lr keeps its ratio to lr
                group["lr"] *= adamw_lr / params.lr
        adamw = torch.optim.AdamW(groups, lr=adamw_lr, betas=tuple(params.adamw_betas), eps=params.adamw_eps,
                                  weight_decay=params.adamw_weight_decay)
    return MuonWithAdamW(muon, adamw)


class MuonWithAdamW(torch.optim.Optimizer):
    """torch.optim.Muon and torch.optim.AdamW stepped together as one optimizer.

    `param_groups` is Muon's groups then AdamW's — the same dicts, so a scheduler or the
    gradient scaler acting on this optimizer acts on both — and the state dict holds both
    optimizers' state dicts. `defaults` are Muon's (schedulers that cycle momentum read them).
    """

    def __init__(self, muon: torch.optim.Muon, adamw: torch.optim.AdamW | None) -> None:
        self.parts: list[torch.optim.Optimizer] = [muon] + ([adamw] if adamw is not None else [])
        super().__init__([group for part in self.parts for group in part.param_groups], {})
        self.defaults = dict(muon.defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for part in self.parts:
            part.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {"muon": self.parts[0].state_dict(),
                "adamw": self.parts[1].state_dict() if len(self.parts) > 1 else None}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if (state_dict.get("adamw") is None) != (len(self.parts) == 1):
            raise ValueError("the saved muon state does not split the parameters as this model does")
        for part, key in zip(self.parts, ("muon", "adamw")[:len(self.parts)], strict=True):
            part.load_state_dict(state_dict[key])
        # Loading replaced each part's group dicts.
        self.param_groups = [group for part in self.parts for group in part.param_groups]


def build_lbfgs(params: p.LBFGSParams, context: BuildContext) -> torch.optim.Optimizer:
    raise PluginError(p.LBFGS_REFUSED)  # validation refuses it first


# ---------------------------------------------------------------- schedulers


def build_step_lr(params: p.StepLRParams, context: BuildContext) -> lr_scheduler.LRScheduler:
    return lr_scheduler.StepLR(context.optimizer, params.step_size, params.gamma)


def build_multistep(params: p.MultiStepParams, context: BuildContext) -> lr_scheduler.LRScheduler:
    return lr_scheduler.MultiStepLR(context.optimizer, params.milestones, params.gamma)


def build_constant(params: p.ConstantParams, context: BuildContext) -> lr_scheduler.LRScheduler:
    return lr_scheduler.ConstantLR(context.optimizer, params.factor, params.total_iters)


def build_linear(params: p.LinearDecayParams, context: BuildContext) -> lr_scheduler.LRScheduler:
    return lr_scheduler.LinearLR(context.optimizer, params.start_factor, params.end_factor,
                                 params.total_iters or _run_length(context))


def build_exponential(params: p.ExponentialParams, context: BuildContext) -> lr_scheduler.LRScheduler:
    return lr_scheduler.ExponentialLR(context.optimizer, params.gamma)


def build_cosine(params: p.CosineParams, context: BuildContext) -> lr_scheduler.LRScheduler:
    return lr_scheduler.CosineAnnealingLR(context.optimizer, params.t_max or _run_length(context), params.eta_min)


def build_cosine_warm_restarts(params: p.CosineRestartsParams, context: BuildContext) -> lr_scheduler.LRScheduler:
    return lr_scheduler.CosineAnnealingWarmRestarts(context.optimizer, params.t_0, params.t_mult, params.eta_min)


def build_cyclic(params: p.CyclicParams, context: BuildContext) -> lr_scheduler.LRScheduler:
    _check_momentum(context, params.cycle_momentum)
    scales = _lr_scales(context.optimizer)
    if params.base_lr is None:  # each group's own lr
        base_lrs = [group.get("initial_lr", group["lr"]) for group in context.optimizer.param_groups]
    else:
        base_lrs = [params.base_lr * s for s in scales]
    return lr_scheduler.CyclicLR(
        context.optimizer, base_lrs, [params.max_lr * s for s in scales],
        step_size_up=params.step_size_up, step_size_down=params.step_size_down, mode=params.mode,
        gamma=params.gamma, cycle_momentum=params.cycle_momentum, base_momentum=params.base_momentum,
        max_momentum=params.max_momentum,
    )


def build_one_cycle(params: p.OneCycleParams, context: BuildContext) -> lr_scheduler.LRScheduler:
    _check_momentum(context, params.cycle_momentum)
    return lr_scheduler.OneCycleLR(
        context.optimizer, [params.max_lr * s for s in _lr_scales(context.optimizer)],
        total_steps=_run_length(context), pct_start=params.pct_start, anneal_strategy=params.anneal_strategy,
        cycle_momentum=params.cycle_momentum, base_momentum=params.base_momentum,
        max_momentum=params.max_momentum, div_factor=params.div_factor,
        final_div_factor=params.final_div_factor, three_phase=params.three_phase,
    )


def build_polynomial(params: p.PolynomialParams, context: BuildContext) -> lr_scheduler.LRScheduler:
    return lr_scheduler.PolynomialLR(context.optimizer, params.total_iters or _run_length(context), params.power)


class Plateau(lr_scheduler.ReduceLROnPlateau):
    """ReduceLROnPlateau that knows which metrics key it watches (`monitor`); the engine steps
    it with that value after each epoch."""

    def __init__(self, optimizer: torch.optim.Optimizer, params: p.PlateauParams) -> None:
        self.monitor = params.monitor
        minimise = params.mode == "min" or (params.mode == "auto" and params.monitor.endswith("loss"))
        super().__init__(optimizer, mode="min" if minimise else "max", factor=params.factor,
                         patience=params.patience, threshold=params.threshold,
                         threshold_mode=params.threshold_mode, cooldown=params.cooldown,
                         min_lr=params.min_lr, eps=params.eps)


def build_plateau(params: p.PlateauParams, context: BuildContext) -> Plateau:
    return Plateau(context.optimizer, params)


def _run_length(context: BuildContext) -> int:
    """The scheduler steps of the run after the warm-up: the default length of a decay."""
    if not context.schedule_length:
        raise PluginError("this scheduler's length defaults to the run's (context.schedule_length), which was not "
                          "set; give it in the scheduler's params")
    return context.schedule_length


def _lr_scales(optimizer: torch.optim.Optimizer) -> list[float]:
    """Each param group's lr relative to the optimizer's lr (1 without lr_groups, or for an
    optimizer with no default lr)."""
    base = optimizer.defaults.get("lr")
    if not isinstance(base, (int, float)) or not base:
        return [1.0] * len(optimizer.param_groups)
    return [group.get("initial_lr", group["lr"]) / base for group in optimizer.param_groups]


def _check_momentum(context: BuildContext, cycle_momentum: bool) -> None:
    defaults = context.optimizer.defaults
    if cycle_momentum and "momentum" not in defaults and "betas" not in defaults:
        name = context.recipe.optimizer.name if context.recipe is not None else type(context.optimizer).__name__
        raise RecipeError([Problem("scheduler.cycle_momentum", f"the optimizer '{name}' has no momentum or betas "
                                                               "to cycle", "set cycle_momentum = false")])
