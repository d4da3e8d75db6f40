"""Image batch streams: every source yields `ImageBatch(images, labels)` with images as
uint8 numpy (n, H, W, 3) and labels as int64 (n,) or None, so samples generated in
memory, a folder of PNGs and an ADM-style .npz are all scored by the same code.

Colour handling follows PIL's convert("RGB"): one grey channel is repeated three times;
that is what clean-fid does when it reads image files.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

import numpy as np
import torch
from PIL import Image

__all__ = ["ImageBatch", "to_nhwc_rgb_uint8", "as_batches", "batches_from_arrays",
           "batches_from_png_folder", "batches_from_npz", "list_image_files", "write_png_folder"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class ImageBatch(NamedTuple):
    images: np.ndarray              # (n, H, W, 3) uint8
    labels: np.ndarray | None       # (n,) int64


def to_nhwc_rgb_uint8(images) -> np.ndarray:
    """uint8 images as (n, H, W, 3) numpy.

    Accepts numpy arrays or torch tensors, NHWC or NCHW, with 1 or 3 channels (or no
    channel axis: (n, H, W) grey). Layout rule: a last axis of size 1 or 3 means NHWC;
    otherwise an axis 1 of size 1 or 3 means NCHW.
    """
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    x = np.asarray(images)
    if x.dtype != np.uint8:
        raise TypeError(f"images must be uint8 (0..255), got {x.dtype}")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise ValueError(f"expected a batch of images (n, H, W, C) or (n, C, H, W), got {x.shape}")
    if x.shape[-1] not in (1, 3):
        if x.shape[1] in (1, 3):
            x = x.transpose(0, 2, 3, 1)
        else:
            raise ValueError(f"cannot find a channel axis of size 1 or 3 in {x.shape}")
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return np.ascontiguousarray(x)


def _labels(labels, n: int) -> np.ndarray | None:
    if labels is None:
        return None
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    y = np.asarray(labels).reshape(-1).astype(np.int64)
    if y.shape[0] != n:
        raise ValueError(f"{y.shape[0]} labels for {n} images")
    return y


def as_batches(stream: Iterable) -> Iterator[ImageBatch]:
    """Normalise a stream whose items are image arrays/tensors or (images, labels) pairs."""
    for item in stream:
        if isinstance(item, (tuple, list)):
            if len(item) != 2:
                raise ValueError("stream items must be images or (images, labels)")
            images, labels = item
        else:
            images, labels = item, None
        x = to_nhwc_rgb_uint8(images)
        yield ImageBatch(x, _labels(labels, x.shape[0]))


def batches_from_arrays(images, labels=None, batch_size: int = 500) -> Iterator[ImageBatch]:
    """Slice in-memory images (any layout accepted by to_nhwc_rgb_uint8) into batches."""
    n = len(images)
    for start in range(0, n, batch_size):
        x = to_nhwc_rgb_uint8(images[start:start + batch_size])
        y = None if labels is None else _labels(labels[start:start + batch_size], x.shape[0])
        yield ImageBatch(x, y)


def list_image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files under `folder` (recursive), sorted by relative path."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"no such image folder: {root}")
    files = [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def batches_from_png_folder(folder: str | os.PathLike, batch_size: int = 500,
                            labels=None) -> Iterator[ImageBatch]:
    """Images of a folder in sorted file order (all of one size), RGB uint8.

    Labels are not stored in image files; pass them (in sorted file order) if known.
    """
    files = list_image_files(folder)
    if labels is not None and len(labels) != len(files):
        raise ValueError(f"{len(labels)} labels for {len(files)} images in {folder}")
    for start in range(0, len(files), batch_size):
        x = np.stack([_read_rgb(p) for p in files[start:start + batch_size]])
        y = None if labels is None else _labels(labels[start:start + batch_size], x.shape[0])
        yield ImageBatch(x, y)


def batches_from_npz(path: str | os.PathLike, batch_size: int = 500) -> Iterator[ImageBatch]:
    """An ADM-style sample file: arr_0 = (N, H, W, 3) uint8 images, optional arr_1 = labels."""
    with np.load(path, allow_pickle=False) as z:
        if "arr_0" not in z.files:
            raise KeyError(f"{path}: no arr_0 (expected ADM-style samples: arr_0 images, arr_1 labels)")
        images = z["arr_0"]
        labels = z["arr_1"] if "arr_1" in z.files else None
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"{path}: arr_0 must be (N, H, W, 3) uint8, got {images.shape} {images.dtype}")
    yield from batches_from_arrays(images, labels, batch_size)


def write_png_folder(stream: Iterable, folder: str | os.PathLike, start_index: int = 0) -> int:
    """Write a stream as zero-padded PNGs (000000.png, ...), so sorted order = stream order.
    Returns the number written. (Used to compare with folder-based tools such as clean-fid.)"""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    i = start_index
    for batch in as_batches(stream):
        for img in batch.images:
            Image.fromarray(img).save(root / f"{i:06d}.png")
            i += 1
    return i - start_index
