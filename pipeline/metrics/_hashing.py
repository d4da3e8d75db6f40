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


_GROUP_SALT = 0x6A09E667F3BCC908  # a second hash stream, independent of the kept-subsample keys


def sample_groups(index: np.ndarray, groups: int, seed: int) -> np.ndarray:
    """The interval group (0 .. groups - 1) of each sample index: a hash of (seed, index) only, so
    it does not depend on batches, chunks or workers, nor on which samples a FeatureSubsample kept
    (those keys are index_hash(index, seed); this is a second hash of them)."""
    if groups < 1:
        raise ValueError("groups must be >= 1")
    return (index_hash(index_hash(index, seed), _GROUP_SALT) % np.uint64(groups)).astype(np.int64)
