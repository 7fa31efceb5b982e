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


def build_cosine(params: p.CosineParams, context: BuildContext):
    t_max = params.t_max or (context.recipe.trainer.epochs if context.recipe else 1)
    return torch.optim.lr_scheduler.CosineAnnealingLR(context.optimizer, t_max, params.eta_min)
