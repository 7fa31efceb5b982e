"""Builders for the built-in losses."""

from __future__ import annotations

import torch

from pipeforge.builtin import params as p
from pipeforge.context import BuildContext


def build_cross_entropy(params: p.CrossEntropyParams, context: BuildContext) -> torch.nn.Module:
    return torch.nn.CrossEntropyLoss(label_smoothing=params.label_smoothing)


def build_mse(params: p.MSEParams, context: BuildContext) -> torch.nn.Module:
    return torch.nn.MSELoss()
