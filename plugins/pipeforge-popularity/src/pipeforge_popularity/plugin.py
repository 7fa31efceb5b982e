"""Registration of the popularity components. Pure pydantic: importing this loads no torch."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from pipeforge import Component, Params, hookimpl

CLASSES = ["Not Popular", "Popular"]

# Prices, ratings and the threshold: finite (every Params float is) and far from overflowing
# when the dataset scales a uniform draw by high - low.
Bound = Annotated[float, Field(ge=-1e9, le=1e9)]


class SimpleNetParams(Params):
    in_features: int = Field(2, ge=1, le=1_000_000, description="Input features (price and rating).")
    hidden: int = Field(32, ge=1, le=1_000_000, description="Width of the hidden ReLU layer.")
    out_features: int = Field(2, ge=1, le=1_000_000, description="Output logits, one per class.")


class ProductsParams(Params):
    n_train: int = Field(800, ge=1, le=100_000_000, description="Training products.")
    n_test: int = Field(200, ge=1, le=100_000_000, description="Test products.")
    price_range: list[Bound] = Field(
        [1.0, 10.0], min_length=2, max_length=2, description="Prices are drawn uniformly from [low, high)."
    )
    rating_range: list[Bound] = Field(
        [1.0, 5.0], min_length=2, max_length=2, description="Ratings are drawn uniformly from [low, high)."
    )
    threshold: float = Field(
        10.0, ge=-1e9, le=1e9, description="A product is 'Popular' (label 1) when price + rating > threshold."
    )

    @field_validator("price_range", "rating_range")
    @classmethod
    def _low_below_high(cls, bounds: list[float]) -> list[float]:
        if not bounds[0] < bounds[1]:
            raise ValueError(f"expected [low, high] with low < high, found {bounds}")
        return bounds


@hookimpl
def register_components() -> list[Component]:
    return [
        Component(
            "model", "popularity.simplenet", SimpleNetParams,
            "pipeforge_popularity.build:build_simplenet",
            "Linear(2, 32) → ReLU → Linear(32, 2), the seed's SimpleNet.",
        ),
        Component(
            "dataset", "popularity.products", ProductsParams,
            "pipeforge_popularity.build:build_products",
            "Random (price, rating) products labelled price + rating > 10; splits train/test.",
            read_inputs="pipeforge_popularity.predict:read_products",
        ),
    ]
