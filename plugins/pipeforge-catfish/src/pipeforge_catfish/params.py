"""The catfish components' parameters: pure pydantic, so validating a recipe loads no torch."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from pipeforge import Params, TransformSpec

# ImageNet statistics, as the seed's Normalize uses.
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def seed_transforms() -> list[TransformSpec]:
    """The seed's pipeline: convert to RGB, resize to 64×64, to tensor, normalize (ImageNet)."""
    return [
        TransformSpec(name="convert", mode="RGB"),
        TransformSpec(name="resize", size=[64, 64]),
        TransformSpec(name="to_tensor"),
        TransformSpec(name="normalize", mean=IMAGENET_MEAN, std=IMAGENET_STD),
    ]


# A split is a sub-folder of root: one name, never a path.
SplitName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


class SimpleNetParams(Params):
    in_features: int = Field(
        12288, ge=1, le=100_000_000,
        description="Values per input image (channels × height × width; 3×64×64 = 12288).",
    )
    num_classes: int | None = Field(
        None, ge=2, le=1_000_000, description="Output logits; default: the dataset's number of classes, else 2."
    )


class ImageFolderParams(Params):
    root: str = Field(
        ..., min_length=1, max_length=4096,
        description="Folder holding <split>/<class>/<image> (e.g. data/catfish/train/cat/1.jpg); "
        "a relative path is taken from the working directory.",
    )
    splits: list[SplitName] = Field(
        ["train", "val", "test"], min_length=1, max_length=100,
        description="Sub-folders of root to load, one split each (a folder name, not a path); "
        "must include 'train'.",
    )
    transforms: list[TransformSpec] = Field(
        default_factory=seed_transforms,
        description="Applied to every image, in order; default: the seed's pipeline "
        "(convert RGB, resize 64×64, to_tensor, normalize with ImageNet mean/std).",
    )
    in_memory: bool = Field(
        False,
        description="Transform every image once at build time and keep the tensors in memory "
        "(fast, needs RAM for all of them); refused with a random_* transform, which it would freeze.",
    )

    @field_validator("splits")
    @classmethod
    def _has_train(cls, splits: list[str]) -> list[str]:
        if "train" not in splits:
            raise ValueError("expected a list that includes 'train' (the split trained on)")
        if len(set(splits)) != len(splits):
            raise ValueError("expected each split once")
        return splits
