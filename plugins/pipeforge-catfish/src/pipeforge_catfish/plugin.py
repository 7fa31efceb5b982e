"""Registration of the catfish components. Pure pydantic: importing this loads no torch."""

from __future__ import annotations

from typing import Any

from pipeforge import BuildContext, Component, ComponentSpec, hookimpl
from pipeforge_catfish.params import ImageFolderParams, SimpleNetParams


@hookimpl
def register_components() -> list[Component]:
    return [
        Component(
            "model", "catfish.simplenet", SimpleNetParams,
            "pipeforge_catfish.build:build_simplenet",
            "Flatten → Linear(12288, 84) → ReLU → Linear(84, 50) → ReLU → Linear(50, 2), the seed's SimpleNet.",
        ),
        Component(
            "dataset", "catfish.image_folder", ImageFolderParams,
            "pipeforge_catfish.build:build_image_folder",
            "Images in root/<split>/<class>/ (like ImageFolder); corrupt images are skipped and listed, never deleted.",
        ),
    ]


@hookimpl
def load_inputs(spec: ComponentSpec, inputs: list[str], context: BuildContext) -> Any:
    """Images for `pipeforge predict`: each INPUT is an image file (any mode or size), read
    with the run's own `dataset.transforms`; the output is the class folder's name."""
    if spec.name != "catfish.image_folder":
        return None
    from pipeforge_catfish.predict import read_images

    return read_images(ImageFolderParams.model_validate(spec.params), inputs, context)

