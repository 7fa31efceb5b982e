"""Reading images for `pipeforge predict`; imported only when predict runs (torch, PIL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from pipeforge import DataError

SIZE = (28, 28)


def read_images(params: Any, inputs: list[str], context: Any) -> torch.Tensor:
    """Images for `pipeforge predict`, as one float batch `N x 1 x 28 x 28` in [0, 1] like the
    dataset's `ToTensor()` images: each INPUT is an image file PIL can read, made grayscale
    ("L") and resized to 28 x 28 (bilinear) when it is not already (a light item on a dark
    background, as in Fashion-MNIST). Raises `DataError` naming an input that is missing or not a readable image.
    """
    return torch.stack([_read_image(text) for text in inputs])


def _read_image(text: str) -> torch.Tensor:
    path = Path(text)
    if not path.is_file():
        what = "a directory, not an image file" if path.is_dir() else "no such image file"
        raise DataError(f"{text}: {what}")
    try:
        with Image.open(path) as image:
            image = image.convert("L")  # decodes the whole file: a truncated one fails here
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"{text}: cannot read it as an image ({reason})") from None
    if image.size != SIZE:
        image = image.resize(SIZE, Image.Resampling.BILINEAR)
    return pil_to_tensor(image).float().div(255)
