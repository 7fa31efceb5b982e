"""Registration of the catfish components. Pure pydantic: importing this loads no torch."""

from __future__ import annotations

from pipeforge import Component, hookimpl
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
            read_inputs="pipeforge_catfish.predict:read_images",
        ),
    ]
