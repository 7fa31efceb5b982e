"""Registration of the simple components. Pure pydantic: importing this loads no torch."""

from __future__ import annotations

from pydantic import Field, model_validator

from pipeforge import Component, Params, hookimpl


class LinearParams(Params):
    in_features: int = Field(10, ge=1, le=1_000_000, description="Input features.")
    out_features: int = Field(2, ge=1, le=1_000_000, description="Output logits, one per class.")


class RandomParams(Params):
    n_train: int = Field(1000, ge=1, le=10_000_000, description="Training samples.")
    n_val: int = Field(100, ge=1, le=10_000_000, description="Validation samples.")
    features: int = Field(10, ge=1, le=1_000_000, description="Features per sample, drawn from N(0, 1).")
    classes: int = Field(2, ge=2, le=1_000_000, description="Labels are drawn uniformly from 0..classes-1.")

    @model_validator(mode="after")
    def _fits_in_memory(self) -> RandomParams:
        values = (self.n_train + self.n_val) * self.features
        if values > 2**28:
            raise ValueError(f"(n_train + n_val) × features is {values:,} values; at most {2**28:,} (1 GB)")
        return self


@hookimpl
def register_components() -> list[Component]:
    return [
        Component(
            "model", "simple.linear", LinearParams, "pipeforge_simple.build:build_linear",
            "A single nn.Linear(in_features, out_features), the seed's SimpleModel.",
        ),
        Component(
            "dataset", "simple.random", RandomParams, "pipeforge_simple.build:build_random",
            "Random N(0, 1) vectors with random labels, drawn once from the run seed; splits train/val.",
        ),
    ]
