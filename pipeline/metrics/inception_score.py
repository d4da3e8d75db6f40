"""Inception-Score-style score from class probabilities (Salimans et al. 2016).

    IS = exp( E_x KL( p(y|x) || p(y) ) ),      p(y) = E_x p(y|x),

computed on `splits` disjoint parts of the samples and reported as mean and std over
the parts. With the mean of p(y|x) written p_bar, the expected KL splits into two sums
that can be accumulated batch by batch:

    E_x KL(p(y|x) || p_bar) = E_x [ sum_y p(y|x) log p(y|x) ] - sum_y p_bar(y) log p_bar(y).

Called the Inception Score only with Inception's logits; with the evaluation
classifier's logits it is is_evalnet.

Split assignment: sample i goes to split hash(seed, i) mod splits (see `_hashing`), a
random partition that depends only on the sample index -- not on the batch size, and
not on how the labels were ordered (contiguous or interleaved classes would otherwise
give splits with skewed label distributions).
"""
from __future__ import annotations

import numpy as np

from ._hashing import index_hash

__all__ = ["InceptionScoreAccumulator", "inception_score", "softmax"]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _xlogx(p: np.ndarray) -> np.ndarray:
    """p log p with 0 log 0 = 0."""
    out = np.zeros_like(p)
    pos = p > 0
    out[pos] = p[pos] * np.log(p[pos])
    return out


class InceptionScoreAccumulator:
    """Streams probabilities (or logits) and gives the score per split."""

    def __init__(self, num_classes: int | None = None, splits: int = 10, seed: int = 0):
        if splits < 1:
            raise ValueError("splits must be >= 1")
        self.splits = splits
        self.seed = seed
        self.num_classes = num_classes
        self.count = np.zeros(splits, dtype=np.int64)
        self._sum_p = None if num_classes is None else np.zeros((splits, num_classes))
        self._sum_plogp = np.zeros(splits)  # sum over samples of sum_y p log p
        self.seen = 0

    def update(self, probs: np.ndarray | None = None, *, logits: np.ndarray | None = None,
               start_index: int | None = None) -> None:
        """Add a batch. `start_index` is the global index of its first sample
        (default: continue after the previous batch)."""
        if (probs is None) == (logits is None):
            raise ValueError("give exactly one of probs or logits")
        p = softmax(logits) if logits is not None else np.asarray(probs, dtype=np.float64)
        if p.ndim != 2:
            raise ValueError(f"probabilities must be (n, classes), got {p.shape}")
        if self._sum_p is None:
            self.num_classes = p.shape[1]
            self._sum_p = np.zeros((self.splits, self.num_classes))
        if p.shape[1] != self.num_classes:
            raise ValueError(f"expected {self.num_classes} classes, got {p.shape[1]}")
        start = self.seen if start_index is None else start_index
        idx = np.arange(start, start + p.shape[0], dtype=np.uint64)
        split = (index_hash(idx, self.seed) % np.uint64(self.splits)).astype(np.int64)
        np.add.at(self._sum_p, split, p)
        np.add.at(self._sum_plogp, split, _xlogx(p).sum(axis=1))
        self.count += np.bincount(split, minlength=self.splits)
        self.seen = max(self.seen, start + p.shape[0])

    def merge(self, other: "InceptionScoreAccumulator") -> None:
        """Combine with the sums of another part of the stream (disjoint sample indices)."""
        if (other.splits, other.seed) != (self.splits, self.seed):
            raise ValueError(f"cannot merge {other.splits} splits (seed {other.seed}) into {self.splits} "
                             f"(seed {self.seed})")
        if other._sum_p is None:
            return
        if self._sum_p is None:
            self.num_classes = other.num_classes
            self._sum_p = np.zeros_like(other._sum_p)
        if other.num_classes != self.num_classes:
            raise ValueError(f"expected {self.num_classes} classes, got {other.num_classes}")
        self._sum_p += other._sum_p
        self._sum_plogp += other._sum_plogp
        self.count += other.count
        self.seen = max(self.seen, other.seen)

    def per_split(self) -> np.ndarray:
        """exp(E KL) of every non-empty split."""
        if self._sum_p is None or self.count.sum() == 0:
            raise ValueError("no samples")
        scores = []
        for s in range(self.splits):
            n = self.count[s]
            if n == 0:
                continue
            p_bar = self._sum_p[s] / n
            mean_kl = self._sum_plogp[s] / n - _xlogx(p_bar).sum()
            scores.append(np.exp(max(mean_kl, 0.0)))  # KL >= 0; clip round-off
        return np.asarray(scores)

    def result(self) -> tuple[float, float]:
        scores = self.per_split()
        return float(scores.mean()), float(scores.std())


def inception_score(probs: np.ndarray | None = None, *, logits: np.ndarray | None = None,
                    splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """(mean, std) over splits of exp(E_x KL(p(y|x) || p(y)))."""
    acc = InceptionScoreAccumulator(splits=splits, seed=seed)
    acc.update(probs, logits=logits)
    return acc.result()
