"""Registration of the Fashion-MNIST components. Pure pydantic: no torch or torchvision here."""

from __future__ import annotations

from pydantic import Field

from pipeforge import Component, Params, hookimpl

CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]


class MLPParams(Params):
    in_features: int = Field(28 * 28, ge=1, le=1_000_000, description="Inputs after flattening (28 x 28 pixels).")
    hidden: int = Field(512, ge=1, le=1_000_000, description="Width of both hidden ReLU layers.")
    out_features: int = Field(10, ge=1, le=1_000_000, description="Output logits, one per class.")


class FashionMNISTParams(Params):
    root: str = Field(
        "data", max_length=4096, description="Directory holding FashionMNIST/raw/ (torchvision's layout); relative to the working directory."
    )
    download: bool = Field(
        True, description="Download (or extract already downloaded .gz) files that are missing, as the seed does."
    )


@hookimpl
def register_components() -> list[Component]:
    return [
        Component(
            "model", "fashion.mlp", MLPParams, "pipeforge_fashion.build:build_mlp",
            "Flatten → Linear(784, 512) → ReLU → Linear(512, 512) → ReLU → Linear(512, 10).",
        ),
        Component(
            "dataset", "fashion.fashion_mnist", FashionMNISTParams, "pipeforge_fashion.build:build_fashion_mnist",
            "Fashion-MNIST from <root>/FashionMNIST/raw, as 1x28x28 floats in [0, 1]; splits train/test.",
            read_inputs="pipeforge_fashion.predict:read_images",
        ),
    ]
