"""A counter-based hash of (seed, sample index): deterministic random choices that do
not depend on batch boundaries (which samples KID/PR keep, IS split membership)."""
from __future__ import annotations

import numpy as np

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def index_hash(index: np.ndarray, seed: int) -> np.ndarray:
    """SplitMix64 finaliser of index + seed * golden-ratio constant, as uint64."""
    with np.errstate(over="ignore"):
        x = np.asarray(index, dtype=np.uint64) + np.uint64(seed % 2**64) * np.uint64(0x9E3779B97F4A7C15)
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return x
