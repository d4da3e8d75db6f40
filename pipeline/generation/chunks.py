"""A sample set on disk: chunks of consecutive image indices, one .npz each, written atomically.

Chunk k of a set of N images with chunk size C holds images k*C .. min((k+1)*C, N) - 1 as
``chunk_{k:06d}.npz`` with arrays ``images`` (uint8 [n, H, W, C], NHWC), ``labels`` (int64 [n])
and ``indices`` (int64 [n]); read with ``np.load(allow_pickle=False)``. Every chunk is written
under a temporary name and renamed (pipeline.store.Directory.write_bytes), so a chunk file
either is whole or does not exist, and an interrupted run regenerates only the missing chunks.
"""
from __future__ import annotations

import io
import re
from typing import Iterator, NamedTuple

import numpy as np

CHUNK_PATTERN = re.compile(r"^chunk_(\d{6})\.npz$")


class ChunkPlan(NamedTuple):
    index: int
    start: int
    stop: int

    @property
    def name(self) -> str:
        return chunk_name(self.index)

    @property
    def indices(self) -> range:
        return range(self.start, self.stop)


def chunk_name(k: int) -> str:
    return f"chunk_{k:06d}.npz"


def plan_chunks(num_images: int, chunk_size: int, prefix: int | None = None) -> list[ChunkPlan]:
    """The chunks of images 0 .. num_images - 1. With `prefix`, the first `prefix` images are
    chunked as a set of that many would be and the rest after them, so a set grown from a smaller
    one keeps the smaller one's chunks (the sweep's full round reuses its screening round's)."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    first = num_images if prefix is None else min(prefix, num_images)
    starts = [*range(0, first, chunk_size), *range(first, num_images, chunk_size)]
    ends = [*starts[1:], num_images]
    return [ChunkPlan(k, start, min(start + chunk_size, end)) for k, (start, end) in enumerate(zip(starts, ends))]


def encode_chunk(images: np.ndarray, labels: np.ndarray, indices) -> bytes:
    images = np.ascontiguousarray(images, dtype=np.uint8)
    labels = np.asarray(labels, dtype=np.int64)
    indices = np.asarray(list(indices), dtype=np.int64)
    if not (images.shape[0] == labels.shape[0] == indices.shape[0]) or images.ndim != 4:
        raise ValueError(f"chunk arrays disagree: images {images.shape}, labels {labels.shape}, "
                         f"indices {indices.shape}")
    buffer = io.BytesIO()
    np.savez(buffer, images=images, labels=labels, indices=indices)
    return buffer.getvalue()


def decode_chunk(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return z["images"], z["labels"], z["indices"]


def write_chunk(directory, plan: ChunkPlan, images: np.ndarray, labels: np.ndarray) -> int:
    """Write one chunk atomically into a store Directory; returns its size in bytes."""
    data = encode_chunk(images, labels, plan.indices)
    directory.write_bytes(plan.name, data)
    return len(data)


def read_chunk(directory, plan: ChunkPlan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    images, labels, indices = decode_chunk(directory.read_bytes(plan.name))
    if not np.array_equal(indices, np.arange(plan.start, plan.stop)):
        raise ValueError(f"{directory.uri}/{plan.name}: holds indices {indices[:3]}..., "
                         f"expected {plan.start}..{plan.stop - 1}")
    return images, labels, indices


def missing_chunks(directory, plans: list[ChunkPlan]) -> list[ChunkPlan]:
    """The planned chunks without a file in ``directory`` (files are whole: written atomically)."""
    present = set(directory.listdir())
    return [p for p in plans if p.name not in present]


def remove_temporaries(directory) -> int:
    """Delete the temporary files an interrupted write left (``<name>.tmp-<id>``); returns how many."""
    stale = [name for name in directory.listdir() if ".tmp-" in name]
    for name in stale:
        directory.delete(name)
    return len(stale)


def iter_chunks(directory, plans: list[ChunkPlan]) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(images, labels, indices) of every chunk, in index order, one chunk in memory at a time."""
    for plan in plans:
        yield read_chunk(directory, plan)
