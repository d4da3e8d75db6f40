"""Sample grids: a few images of a set tiled into one PNG (for MLflow and the leaderboard)."""
from __future__ import annotations

import io
import math
from typing import Optional

import numpy as np


def grid_image(images: np.ndarray, columns: Optional[int] = None, pad: int = 1) -> np.ndarray:
    """uint8 [n, H, W, C] -> one uint8 [rows*(H+pad)+pad, cols*(W+pad)+pad, C] image, row-major."""
    images = np.asarray(images, dtype=np.uint8)
    n, h, w, c = images.shape
    columns = columns or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / columns)
    out = np.zeros((rows * (h + pad) + pad, columns * (w + pad) + pad, c), dtype=np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        out[pad + r * (h + pad):pad + r * (h + pad) + h, pad + col * (w + pad):pad + col * (w + pad) + w] = image
    return out


def grid_png(images: np.ndarray, columns: Optional[int] = None, scale: int = 1) -> bytes:
    """PNG bytes of ``grid_image`` (nearest-neighbour upscaled by ``scale`` for tiny images)."""
    from PIL import Image

    grid = grid_image(images, columns)
    if scale > 1:
        grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
    buffer = io.BytesIO()
    Image.fromarray(grid.squeeze(-1) if grid.shape[-1] == 1 else grid).save(buffer, format="PNG")
    return buffer.getvalue()
