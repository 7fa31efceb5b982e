"""Parameter models of the built-in losses: every torch.nn loss that is called as
`loss(outputs, targets)`, by name. Pure pydantic: importing this loads no torch.

Written by hand after the torch classes' signatures; tests/test_catalog.py compares them (see
`optim_params`). No loss takes `reduction`: the engine weights each batch's loss by its samples
(epoch means, gradient accumulation), so every loss is a mean over the batch (`kl_div` may choose
how). The deprecated `size_average` and `reduce` are left out too.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from pipeforge.builtin.optim_params import CatalogParams
from pipeforge.errors import shorten

MAX_CLASSES = 1_000_000
Weight = Annotated[float, Field(ge=0, le=1e6)]
PositiveWeight = Annotated[float, Field(gt=0, le=1e6)]

CLASS_WEIGHT = ('A weight per class, in label order, or "balanced": n_samples / (n_classes × the class\'s '
                "count) over the training split's labels; unset: every class weighs 1.")


def _shown(value: Any) -> str:
    """A value as recipe messages show it: `'x' (string)`, `3 (integer)`, `table`."""
    kinds = {str: "string", bool: "boolean", int: "integer", float: "float", list: "array", dict: "table"}
    kind = kinds.get(type(value), type(value).__name__)
    return kind if isinstance(value, (list, dict)) else f"{shorten(repr(value))} ({kind})"


def _weights_or_balanced(value: Any, positive: bool = False) -> Any:
    """One message for a value that is neither a list of weights nor "balanced" (the union's
    own errors would name each of its members)."""
    if value is None or value == "balanced":
        return value
    low = "> 0" if positive else ">= 0"
    if isinstance(value, list):
        if not value or len(value) > MAX_CLASSES:
            raise ValueError(f"expected 1 to {MAX_CLASSES:,} weights, found {len(value):,}")
        for index, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, (int, float)) or not (
                    0 <= item <= 1e6 and (item > 0 or not positive)):
                raise ValueError(f"[{index}]: expected a number {low} and <= 1e6, found {_shown(item)}")
        return [float(item) for item in value]
    raise ValueError(f'expected a list of weights or "balanced", found {_shown(value)}')


class CrossEntropyParams(CatalogParams):
    weight: list[Weight] | Literal["balanced"] | None = Field(None, description=CLASS_WEIGHT)
    ignore_index: int = Field(-100, description="A target equal to this is left out of the loss.")
    label_smoothing: float = Field(0.0, ge=0, le=1, description="Label smoothing in [0, 1].")

    _weight = field_validator("weight", mode="before")(_weights_or_balanced)


class NLLParams(CatalogParams):
    weight: list[Weight] | Literal["balanced"] | None = Field(None, description=CLASS_WEIGHT)
    ignore_index: int = Field(-100, description="A target equal to this is left out of the loss.")

    _weight = field_validator("weight", mode="before")(_weights_or_balanced)


class BCEParams(CatalogParams):
    weight: list[Weight] | None = Field(None, max_length=MAX_CLASSES, description="A weight per output (label), "
                                                                                "broadcast over the batch.")


class BCEWithLogitsParams(CatalogParams):
    weight: list[Weight] | None = Field(None, max_length=MAX_CLASSES, description="A weight per output (label), "
                                                                                "broadcast over the batch.")
    pos_weight: list[PositiveWeight] | Literal["balanced"] | None = Field(
        None, description='The weight of positive targets, one per output (label), or "balanced": negatives / '
        "positives of each label in the training split; e.g. [3.0] for a rare positive class.",
    )

    _pos_weight = field_validator("pos_weight", mode="before")(lambda value: _weights_or_balanced(value, positive=True))


class MSEParams(CatalogParams):
    """Mean squared error takes no parameters."""


class L1Params(CatalogParams):
    """Mean absolute error takes no parameters."""


class SmoothL1Params(CatalogParams):
    beta: float = Field(1.0, ge=0, le=1e6, description="Below this absolute error the loss is quadratic, above it linear.")


class HuberParams(CatalogParams):
    delta: float = Field(1.0, gt=0, le=1e6, description="Below this absolute error the loss is quadratic, above it linear.")


class KLDivParams(CatalogParams):
    reduction: Literal["batchmean", "mean"] = Field(
        "batchmean", description='"batchmean": the sum over a sample\'s distribution, averaged over the batch (the '
        'KL divergence); "mean": averaged over every element.',
    )
    log_target: bool = Field(False, description="The targets are log-probabilities too.")


class PoissonNLLParams(CatalogParams):
    log_input: bool = Field(True, description="The outputs are log-rates (exp is applied), else rates.")
    full: bool = Field(False, description="Add the Stirling approximation term.")
    eps: float = Field(1e-8, gt=0, le=1, description="Added to rates before the log when log_input = false.")


class HingeEmbeddingParams(CatalogParams):
    margin: float = Field(1.0, ge=0, le=1e6, description="Margin for targets of -1.")


class SoftMarginParams(CatalogParams):
    """The soft margin loss takes no parameters."""


class MultiMarginParams(CatalogParams):
    p: Literal[1, 2] = Field(1, description="1: hinge; 2: squared hinge.")
    margin: float = Field(1.0, ge=0, le=1e6, description="Margin.")
    weight: list[Weight] | Literal["balanced"] | None = Field(None, description=CLASS_WEIGHT)

    _weight = field_validator("weight", mode="before")(_weights_or_balanced)


class MultiLabelMarginParams(CatalogParams):
    """The multi-label margin loss takes no parameters."""


class MultiLabelSoftMarginParams(CatalogParams):
    weight: list[Weight] | None = Field(None, max_length=MAX_CLASSES, description="A weight per class (label).")
