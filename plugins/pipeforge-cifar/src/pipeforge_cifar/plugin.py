"""Registration of the cifar components. Pure pydantic: importing this loads no torch."""

from __future__ import annotations

from pydantic import Field

from pipeforge import Component, Params, TransformSpec, hookimpl

# ImageNet statistics, as the seed's Normalize uses.
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def train_transforms() -> list[TransformSpec]:
    """Augmentation at CIFAR's own 32×32 size (the seed's RandomSizedCrop(256) upsampled 8×)."""
    return [
        TransformSpec(name="random_resized_crop", size=[32, 32]),
        TransformSpec(name="random_horizontal_flip"),
        TransformSpec(name="to_tensor"),
        TransformSpec(name="normalize", mean=IMAGENET_MEAN, std=IMAGENET_STD),
    ]


def eval_transforms() -> list[TransformSpec]:
    """Deterministic: evaluation sees every test image as it is."""
    return [
        TransformSpec(name="to_tensor"),
        TransformSpec(name="normalize", mean=IMAGENET_MEAN, std=IMAGENET_STD),
    ]


class ResNet18Params(Params):
    num_classes: int | None = Field(
        None, ge=2, le=1_000_000, description="Output logits; default: the dataset's number of classes, else 10."
    )


class Cifar10Params(Params):
    root: str = Field(
        "data",
        min_length=1,
        max_length=4096,
        description="Folder holding cifar-10-batches-py/ (relative paths are taken from the "
        "working directory).",
    )
    download: bool = Field(
        True,
        description="Download and extract the official archive into root when "
        "root/cifar-10-batches-py/ does not exist (never over existing files).",
    )
    check_integrity: bool = Field(
        True,
        description="Check the files against the official md5 sums (torchvision's CIFAR10); "
        "false reads re-packed batches of the same layout without the check.",
    )
    train_transforms: list[TransformSpec] = Field(
        default_factory=train_transforms, min_length=1, max_length=100,
        description="Applied to each training image (a 32×32 RGB PIL image): default random "
        "resized crop to 32×32, random horizontal flip, to_tensor, normalize (ImageNet mean/std).",
    )
    eval_transforms: list[TransformSpec] = Field(
        default_factory=eval_transforms, min_length=1, max_length=100,
        description="Applied to each test image: default to_tensor, normalize (ImageNet mean/std).",
    )


@hookimpl
def register_components() -> list[Component]:
    return [
        Component(
            "model", "cifar.resnet18", ResNet18Params,
            "pipeforge_cifar.build:build_resnet18",
            "torchvision's ResNet-18, untrained (weights=None).",
        ),
        Component(
            "dataset", "cifar.cifar10", Cifar10Params,
            "pipeforge_cifar.build:build_cifar10",
            "CIFAR-10 from root/cifar-10-batches-py/ (python pickles); splits train (50k) and test (10k).",
        ),
    ]
