"""Feature statistics of an image set (the reference statistics of the real data, or of
a generated set): mean, covariance, sample count and a kept subsample of raw features
(for KID and precision/recall), for one named feature extractor.

Saved as a plain .npz (no pickled objects; load with allow_pickle=False). The id is the
sha256 of the contents, so metrics can name the exact statistics they were computed
against and a loaded file is checked against its recorded id.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .accumulate import FeatureSubsample, RunningMoments

__all__ = ["FeatureStats", "StatsIntegrityError"]

FORMAT_VERSION = 1


class StatsIntegrityError(ValueError):
    """A statistics file whose contents do not match the id recorded in it."""


@dataclass(frozen=True, eq=False)
class FeatureStats:
    extractor: str          # feature space, e.g. "inception" (clean-fid) or "evalnet"
    num_samples: int        # N behind mean and cov
    mean: np.ndarray        # (d,) float64
    cov: np.ndarray         # (d, d) float64, unbiased (N - 1)
    features: np.ndarray    # (k, d) float32: kept subsample, k <= N (may be 0 rows)
    feature_indices: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    def __post_init__(self):
        object.__setattr__(self, "mean", np.ascontiguousarray(self.mean, dtype=np.float64))
        object.__setattr__(self, "cov", np.ascontiguousarray(self.cov, dtype=np.float64))
        feats = np.asarray(self.features, dtype=np.float32)
        if feats.size == 0:
            feats = np.zeros((0, self.mean.shape[0]), dtype=np.float32)
        object.__setattr__(self, "features", np.ascontiguousarray(feats))
        object.__setattr__(self, "feature_indices",
                           np.ascontiguousarray(self.feature_indices, dtype=np.int64))
        d = self.mean.shape[0]
        if self.mean.ndim != 1 or self.cov.shape != (d, d) or self.features.shape[1] != d:
            raise ValueError(f"inconsistent shapes: mean {self.mean.shape}, cov {self.cov.shape}, "
                             f"features {self.features.shape}")
        if self.features.shape[0] > self.num_samples:
            raise ValueError("more kept features than samples")

    @property
    def feature_dim(self) -> int:
        return int(self.mean.shape[0])

    @classmethod
    def from_accumulators(cls, extractor: str, moments: RunningMoments,
                          subsample: FeatureSubsample | None = None) -> "FeatureStats":
        feats = subsample.features if subsample is not None else np.zeros((0, moments.dim), np.float32)
        idx = subsample.indices if subsample is not None else np.empty(0, np.int64)
        return cls(extractor=extractor, num_samples=moments.n, mean=moments.mean.copy(),
                   cov=moments.cov, features=feats, feature_indices=idx)

    @classmethod
    def from_features(cls, extractor: str, features: np.ndarray, keep: int | None = None,
                      seed: int = 0) -> "FeatureStats":
        """Statistics of an in-memory feature matrix (keeps all rows unless `keep`)."""
        features = np.asarray(features)
        moments = RunningMoments()
        moments.update(features)
        sub = FeatureSubsample(features.shape[0] if keep is None else keep, seed)
        sub.update(features)
        return cls.from_accumulators(extractor, moments, sub)

    @property
    def stats_id(self) -> str:
        """sha256 over the canonical bytes of every field."""
        h = hashlib.sha256()
        h.update(f"feature-stats/v{FORMAT_VERSION}\0{self.extractor}\0{int(self.num_samples)}\0".encode())
        for arr in (self.mean, self.cov, self.features, self.feature_indices):
            a = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
            h.update(f"{a.dtype.str}{a.shape}\0".encode())
            h.update(a.tobytes())
        return h.hexdigest()

    def save(self, path: str | os.PathLike) -> str:
        """Write a .npz (atomically: temp file then rename). Returns the stats id."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        stats_id = self.stats_id
        with open(tmp, "wb") as f:
            np.savez(f, format_version=np.int64(FORMAT_VERSION), extractor=np.str_(self.extractor),
                     num_samples=np.int64(self.num_samples), mean=self.mean, cov=self.cov,
                     features=self.features, feature_indices=self.feature_indices,
                     stats_id=np.str_(stats_id))
        os.replace(tmp, path)
        return stats_id

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FeatureStats":
        with np.load(path, allow_pickle=False) as z:
            version = int(z["format_version"])
            if version != FORMAT_VERSION:
                raise ValueError(f"{path}: statistics format {version}, expected {FORMAT_VERSION}")
            stats = cls(extractor=str(z["extractor"]), num_samples=int(z["num_samples"]),
                        mean=z["mean"], cov=z["cov"], features=z["features"],
                        feature_indices=z["feature_indices"])
            recorded = str(z["stats_id"])
        if stats.stats_id != recorded:
            raise StatsIntegrityError(f"{path}: contents do not match the recorded id {recorded}")
        return stats
