"""Reading images for `pipeforge predict` on a cat/fish run (torch code, imported lazily)."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.transforms import v2

from pipeforge import BuildContext, DataError
from pipeforge_catfish.build import unreadable
from pipeforge_catfish.params import ImageFolderParams


def read_images(params: ImageFolderParams, inputs: list[str], context: BuildContext) -> torch.Tensor:
    """Each INPUT is an image file, put through the run's own dataset transforms."""
    from PIL import Image

    transform = v2.Compose([context.build("transform", spec) for spec in params.transforms])
    batch = []
    for name in inputs:
        path = Path(name)
        if not path.is_file():
            raise DataError(f"{name}: no such image file")
        reason = unreadable(path)
        if reason is not None:
            raise DataError(f"{name}: not a readable image ({reason})")
        with Image.open(path) as image:
            batch.append(transform(image))
    return torch.stack(batch)
