"""Registration of `timm.model`. Pure pydantic and a names list: importing this loads neither timm
nor torch, so `validate` refuses an unknown architecture (with a suggestion) in milliseconds."""

from __future__ import annotations

from pydantic import Field, field_validator

from pipeforge import Component, Params, hookimpl
from pipeforge_timm.names import TIMM_VERSION, problem


class TimmParams(Params):
    architecture: str = Field(
        min_length=1, max_length=200,
        description=f"A timm {TIMM_VERSION} architecture (timm.list_models()), e.g. \"resnet50\", "
                    "\"efficientnet_b0\", \"vit_tiny_patch16_224\"; a weights tag may follow: \"resnet18.a1_in1k\".")
    pretrained: bool = Field(False, description="Start from timm's pretrained weights (fetched from the Hugging "
                             "Face Hub, or its cache under $HF_HOME); off: random weights.")
    in_chans: int = Field(3, ge=1, le=10_000, description="Input channels (1 for grayscale images).")
    drop_rate: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout before the classifier.")
    drop_path_rate: float | None = Field(None, ge=0.0, lt=1.0,
                                         description="Stochastic depth, for the architectures that have it.")
    img_size: int | None = Field(None, ge=1, le=100_000,
                                 description="Input size, for the architectures built for one (e.g. ViTs: 224).")

    @field_validator("architecture")
    @classmethod
    def _known(cls, name: str) -> str:
        why = problem(name)
        if why:
            raise ValueError(why)
        return name


@hookimpl
def register_components() -> list[Component]:
    return [
        Component(
            "model", "timm.model", TimmParams, "pipeforge_timm.build:build_model",
            "Any timm architecture by name, its classifier sized to the dataset's classes.",
        ),
    ]
