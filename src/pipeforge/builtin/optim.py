"""Builders for the built-in optimizers and schedulers (imported only when a run builds)."""

from __future__ import annotations

import torch

from pipeforge.builtin import params as p
from pipeforge.context import BuildContext


def build_sgd(params: p.SGDParams, context: BuildContext) -> torch.optim.Optimizer:
    return torch.optim.SGD(context.model.parameters(), **params.model_dump())


def build_adam(params: p.AdamParams, context: BuildContext) -> torch.optim.Optimizer:
    return torch.optim.Adam(context.model.parameters(), **_adam_kwargs(params))


def build_adamw(params: p.AdamWParams, context: BuildContext) -> torch.optim.Optimizer:
    return torch.optim.AdamW(context.model.parameters(), **_adam_kwargs(params))


def _adam_kwargs(params: p.AdamParams) -> dict:
    kwargs = params.model_dump()
    kwargs["betas"] = tuple(kwargs["betas"])
    return kwargs


def build_step_lr(params: p.StepLRParams, context: BuildContext):
    return torch.optim.lr_scheduler.StepLR(context.optimizer, params.step_size, params.gamma)


def build_multistep(params: p.MultiStepParams, context: BuildContext):
    return torch.optim.lr_scheduler.MultiStepLR(context.optimizer, params.milestones, params.gamma)


def build_cosine(params: p.CosineParams, context: BuildContext):
    return torch.optim.lr_scheduler.CosineAnnealingLR(context.optimizer, params.t_max or context.schedule_length,
                                                      params.eta_min)


def build_linear(params: p.LinearDecayParams, context: BuildContext):
    return torch.optim.lr_scheduler.LinearLR(context.optimizer, 1.0, params.end_factor,
                                             params.total_iters or context.schedule_length)


def build_one_cycle(params: p.OneCycleParams, context: BuildContext):
    return torch.optim.lr_scheduler.OneCycleLR(
        context.optimizer, params.max_lr, total_steps=context.schedule_length, pct_start=params.pct_start,
        div_factor=params.div_factor, final_div_factor=params.final_div_factor,
        anneal_strategy=params.anneal_strategy,
    )


class Plateau(torch.optim.lr_scheduler.ReduceLROnPlateau):
    """ReduceLROnPlateau that knows which metrics key it watches (`monitor`); the engine steps
    it with that value after each epoch."""

    def __init__(self, optimizer: torch.optim.Optimizer, params: p.PlateauParams) -> None:
        self.monitor = params.monitor
        minimise = params.mode == "min" or (params.mode == "auto" and params.monitor.endswith("loss"))
        super().__init__(optimizer, mode="min" if minimise else "max", factor=params.factor,
                         patience=params.patience, threshold=params.threshold, cooldown=params.cooldown,
                         min_lr=params.min_lr)


def build_plateau(params: p.PlateauParams, context: BuildContext):
    return Plateau(context.optimizer, params)


def build_constant(params: p.ConstantParams, context: BuildContext):
    return torch.optim.lr_scheduler.ConstantLR(context.optimizer, params.factor, params.total_iters)
