"""Class labels of a configuration's images: label i depends only on (seed, i).

- "balanced": the index line is cut into blocks of K = num_classes; block b holds each class
  once, in a random order seeded by (seed, b). Every prefix of N images has each class
  floor(N / K) or ceil(N / K) times (the "balanced" class split of ADM's / EDM's evaluations).
- "uniform": each label is drawn uniformly and independently from a hash of (seed, i).
Both are independent of how indices are split into batches, chunks or workers.
"""
from __future__ import annotations

import hashlib
from typing import Iterable

import torch

from pipeline.generation.sampler_config import SamplerConfig


def _hash64(*parts) -> int:
    digest = hashlib.sha256(":".join(str(int(p)) if not isinstance(p, str) else p for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _block_permutation(seed: int, block: int, num_classes: int) -> list[int]:
    generator = torch.Generator().manual_seed(_hash64("balanced", seed, block))
    return torch.randperm(num_classes, generator=generator).tolist()


def labels_for(config: SamplerConfig, indices: Iterable[int], num_classes: int) -> torch.Tensor:
    """LongTensor of the class labels of images ``indices`` of ``config``."""
    if num_classes < 1:
        raise ValueError("num_classes must be >= 1")
    indices = [int(i) for i in indices]
    if config.class_dist == "uniform":
        return torch.tensor([_hash64("uniform", config.seed, i) % num_classes for i in indices], dtype=torch.long)
    perms: dict[int, list[int]] = {}
    out = []
    for i in indices:
        block, pos = divmod(i, num_classes)
        if block not in perms:
            perms[block] = _block_permutation(config.seed, block, num_classes)
        out.append(perms[block][pos])
    return torch.tensor(out, dtype=torch.long)
