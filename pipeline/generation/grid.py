"""Sample grids: a few images of a set tiled into one PNG (for MLflow and the leaderboard)."""
from __future__ import annotations

import io
import math
from typing import Optional

import numpy as np
from PIL import Image


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


def upscale(images: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling of [..., H, W, C] by an integer factor."""
    return np.repeat(np.repeat(images, scale, axis=-3), scale, axis=-2) if scale > 1 else images


def png_bytes(image: np.ndarray) -> bytes:
    """PNG bytes of one uint8 [H, W, C] image (C = 1 saved as greyscale)."""
    buffer = io.BytesIO()
    Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(buffer, format="PNG")
    return buffer.getvalue()


def grid_png(images: np.ndarray, columns: Optional[int] = None, scale: int = 1) -> bytes:
    """PNG bytes of ``grid_image`` (nearest-neighbour upscaled by ``scale`` for tiny images)."""
    return png_bytes(upscale(grid_image(images, columns), scale))


def class_rows(images: np.ndarray, labels: np.ndarray, per_class: int, max_classes: int) -> np.ndarray:
    """Images arranged for a ``per_class``-column grid with one row per class (the first
    ``max_classes`` classes present, up to ``per_class`` images each in index order); cells
    without an image are black."""
    images, labels = np.asarray(images, dtype=np.uint8), np.asarray(labels)
    classes = sorted(set(labels.tolist()))[:max_classes]
    if not classes:
        raise ValueError("no images for a grid")
    cells = np.zeros((len(classes) * per_class, *images.shape[1:]), dtype=np.uint8)
    for r, cls in enumerate(classes):
        picked = np.flatnonzero(labels == cls)[:per_class]
        cells[r * per_class:r * per_class + len(picked)] = images[picked]
    return cells


def class_grid_png(images: np.ndarray, labels: np.ndarray, per_class: int = 8, max_classes: int = 16,
                   scale: int = 1) -> bytes:
    """A PNG of uint8 NHWC images: one row per class (the first classes up to ``max_classes``),
    up to ``per_class`` images each, in index order; missing cells stay black."""
    return grid_png(class_rows(images, labels, per_class, max_classes), columns=per_class, scale=scale)
