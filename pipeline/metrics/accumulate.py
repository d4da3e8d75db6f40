"""Streaming feature statistics: exact running mean and covariance in float64, and a
deterministic random subsample of the raw features (for KID and precision/recall).

Moments are merged batch by batch with the pairwise update of Chan, Golub & LeVeque
(1979): for the running (n, mean, M2) and a batch (n_b, mean_b, M2_b), where M2 is the
sum of outer products of deviations from the mean,

    delta = mean_b - mean
    mean <- mean + delta * n_b / (n + n_b)
    M2   <- M2 + M2_b + outer(delta, delta) * n * n_b / (n + n_b)

and the covariance is M2 / (n - 1) (unbiased, as numpy.cov). Working with deviations
avoids the cancellation of sum-of-squares formulas when the mean is large.

GroupedMoments keeps the same moments per interval group (sample i in group
sample_groups(i, G, seed)), for the delete-a-group jackknife of pipeline.metrics.intervals.

Every accumulator here has `merge(other)`: accumulators filled on different workers over
disjoint sets of sample indices merge into what one pass over all of them gathers (moments by
the update above, kept subsamples by their keys, groups group by group).
"""
from __future__ import annotations

import numpy as np

from ._hashing import index_hash, sample_groups

__all__ = ["RunningMoments", "GroupedMoments", "FeatureSubsample", "kept_key_threshold"]


class RunningMoments:
    """Running mean/covariance of d-dimensional features (float64, exact)."""

    def __init__(self, dim: int | None = None):
        self.dim = dim
        self.n = 0
        self.mean = None if dim is None else np.zeros(dim)
        self.m2 = None if dim is None else np.zeros((dim, dim))

    def update(self, features: np.ndarray) -> None:
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"features must be (n, d), got {x.shape}")
        if x.shape[0] == 0:
            return
        if self.mean is None:
            self.dim = x.shape[1]
            self.mean = np.zeros(self.dim)
            self.m2 = np.zeros((self.dim, self.dim))
        if x.shape[1] != self.dim:
            raise ValueError(f"expected features of dim {self.dim}, got {x.shape[1]}")
        n_b = x.shape[0]
        mean_b = x.mean(axis=0)
        dev = x - mean_b
        self._merge(n_b, mean_b, dev.T @ dev)

    def merge(self, other: "RunningMoments") -> None:
        """Combine with moments accumulated elsewhere (e.g. another worker)."""
        if other.n == 0:
            return
        if self.mean is None:
            self.dim = other.dim
            self.mean = np.zeros(self.dim)
            self.m2 = np.zeros((self.dim, self.dim))
        self._merge(other.n, other.mean, other.m2)

    def _merge(self, n_b: int, mean_b: np.ndarray, m2_b: np.ndarray) -> None:
        n = self.n + n_b
        delta = mean_b - self.mean
        self.m2 += m2_b + np.outer(delta, delta) * (self.n * n_b / n)
        self.mean += delta * (n_b / n)
        self.n = n

    @property
    def cov(self) -> np.ndarray:
        if self.n < 2:
            raise ValueError("covariance needs at least 2 samples")
        return self.m2 / (self.n - 1)


class GroupedMoments:
    """RunningMoments of each of `groups` disjoint groups of a stream; sample i belongs to group
    sample_groups(i, groups, seed), whatever the batching. Memory: groups * d^2 float64."""

    def __init__(self, groups: int, seed: int = 0):
        self.groups = groups
        self.seed = seed
        self.moments = [RunningMoments() for _ in range(groups)]
        self.seen = 0

    def update(self, features: np.ndarray, start_index: int | None = None) -> None:
        x = np.asarray(features, dtype=np.float64)
        start = self.seen if start_index is None else start_index
        group = sample_groups(np.arange(start, start + x.shape[0], dtype=np.uint64), self.groups, self.seed)
        for g in np.unique(group):
            self.moments[g].update(x[group == g])
        self.seen = max(self.seen, start + x.shape[0])

    def merge(self, other: "GroupedMoments") -> None:
        """Combine with the groups of another part of the stream (same groups and seed)."""
        if (other.groups, other.seed) != (self.groups, self.seed):
            raise ValueError(f"cannot merge {other.groups} groups (seed {other.seed}) into {self.groups} "
                             f"(seed {self.seed})")
        for mine, theirs in zip(self.moments, other.moments):
            mine.merge(theirs)
        self.seen = max(self.seen, other.seen)

    @property
    def sizes(self) -> np.ndarray:
        return np.array([m.n for m in self.moments], dtype=np.int64)

    def without(self, group: int) -> RunningMoments:
        """The moments of every sample outside `group` (the others merged)."""
        rest = RunningMoments()
        for g, moments in enumerate(self.moments):
            if g != group:
                rest.merge(moments)
        return rest


class FeatureSubsample:
    """Keeps a uniform random subset of at most `max_keep` features of a stream.

    Bottom-k sampling: sample i gets the key index_hash(i, seed); the `max_keep` samples
    with the smallest keys are kept. The subset depends only on the sample indices and the
    seed -- never on batch sizes -- and when the stream has at most `max_keep` samples,
    all are kept. The result is ordered by sample index.

    `max_key`: keys above it are dropped at once. A worker that sees part of a stream of known
    length N passes kept_key_threshold(N, max_keep, seed), the largest key the whole stream
    keeps, so it holds (and ships) only what the merged subsample will keep.
    """

    def __init__(self, max_keep: int, seed: int = 0, max_key: int | None = None):
        if max_keep < 0:
            raise ValueError("max_keep must be >= 0")
        self.max_keep = max_keep
        self.seed = seed
        self.max_key = None if max_key is None else np.uint64(max_key)
        self._chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (keys, index, feats)
        self._count = 0
        self._threshold: np.uint64 | None = None  # largest kept key once max_keep are held
        self.seen = 0

    def update(self, features: np.ndarray, start_index: int | None = None) -> None:
        x = np.asarray(features, dtype=np.float32)
        start = self.seen if start_index is None else start_index
        idx = np.arange(start, start + x.shape[0], dtype=np.int64)
        self.seen = max(self.seen, start + x.shape[0])
        if self.max_keep == 0 or x.shape[0] == 0:
            return
        keys = index_hash(idx.astype(np.uint64), self.seed)
        if self.max_key is not None:
            sel = keys <= self.max_key
            keys, idx, x = keys[sel], idx[sel], x[sel]
        self._add(keys, idx, x.copy())

    def _add(self, keys: np.ndarray, idx: np.ndarray, x: np.ndarray) -> None:
        if self._threshold is not None:  # full: only smaller keys can enter
            sel = keys < self._threshold
            keys, idx, x = keys[sel], idx[sel], x[sel]
        if keys.size:
            self._chunks.append((keys, idx, x))
            self._count += keys.size
            if self._count > 2 * self.max_keep:
                self._prune()

    def merge(self, other: "FeatureSubsample") -> None:
        """Combine with the subsample of another part of the stream (disjoint sample indices,
        same seed): the result keeps what one pass over both parts keeps."""
        if other.seed != self.seed:
            raise ValueError(f"cannot merge a subsample with seed {other.seed} into one with seed {self.seed}")
        for keys, idx, feats in other._chunks:
            self._add(keys, idx, feats)
        self.seen = max(self.seen, other.seen)

    def _prune(self) -> None:
        if len(self._chunks) > 1:
            keys, idx, feats = (np.concatenate(parts) for parts in zip(*self._chunks))
        elif self._chunks:
            keys, idx, feats = self._chunks[0]
        else:
            return
        if keys.size > self.max_keep:
            keep = np.argpartition(keys, self.max_keep - 1)[: self.max_keep]
            keys, idx, feats = keys[keep], idx[keep], feats[keep]
        if keys.size == self.max_keep:
            self._threshold = keys.max()
        order = np.argsort(idx, kind="stable")
        self._chunks = [(keys[order], idx[order], feats[order])]
        self._count = keys.size

    @property
    def indices(self) -> np.ndarray:
        self._prune()
        return self._chunks[0][1] if self._chunks else np.empty(0, dtype=np.int64)

    @property
    def features(self) -> np.ndarray:
        """Kept features, ordered by sample index, float32 (k, d)."""
        self._prune()
        if not self._chunks:
            return np.empty((0, 0), dtype=np.float32)
        return self._chunks[0][2]


def kept_key_threshold(num_samples: int, keep: int, seed: int = 0) -> int | None:
    """The largest key FeatureSubsample(keep, seed) keeps of samples 0 .. num_samples - 1; None
    when it keeps them all (a worker's subsample then filters nothing)."""
    if keep <= 0 or num_samples <= keep:
        return None
    keys = index_hash(np.arange(num_samples, dtype=np.uint64), seed)
    return int(np.partition(keys, keep - 1)[keep - 1])
