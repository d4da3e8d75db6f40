"""Gathering features: what one pass over a stream of images collects per feature extractor, for
the whole stream at once or for parts of it that are merged afterwards.

A `FeatureAccumulator` holds, for one extractor, everything the metrics need from the features:
the exact moments (mean, covariance, N), the kept subsample for KID and precision/recall, the
moments of each interval group, the Inception-Score sums and the class-accuracy counts. Every
piece is addressed by the samples' global indices (pipeline.metrics.accumulate), so workers that
gather disjoint index ranges of one stream (chunks of a sample set, shards of a dataset) produce
parts whose `merge` is what a single pass gathers: counts, kept subsamples, group membership and
IS splits exactly, moments up to float64 rounding (Chan et al.'s pairwise update).
`accumulate_features` is that single pass, written with the same accumulator.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from .accumulate import FeatureSubsample, GroupedMoments, RunningMoments
from .class_accuracy import ClassAccuracyAccumulator
from .extractors import FeatureExtractor
from .inception_score import InceptionScoreAccumulator
from .sources import as_batches
from .stats import FeatureStats

__all__ = ["StreamFeatures", "FeatureAccumulator", "accumulate_features", "compute_feature_stats"]

KEEP_ALL = np.iinfo(np.int64).max


@dataclass
class StreamFeatures:
    """What one pass over a stream gathers for one extractor."""
    stats: FeatureStats
    inception_score: InceptionScoreAccumulator | None
    class_accuracy: ClassAccuracyAccumulator | None
    groups: GroupedMoments | None = None  # per interval group, when intervals are wanted
    group_seed: int = 0


class FeatureAccumulator:
    """One extractor's statistics over (part of) a stream; parts over disjoint indices merge.

    `keep`: features kept for KID and precision/recall (None: all); `groups`: interval groups
    (None: no intervals); `max_key`: see FeatureSubsample (a worker's pre-filter)."""

    def __init__(self, name: str, *, keep: int | None = 10_000, seed: int = 0, is_splits: int = 10,
                 groups: int | None = None, max_key: int | None = None):
        self.name = name
        self.seed = seed
        self.is_splits = is_splits
        self.moments = RunningMoments()
        self.subsample = FeatureSubsample(keep if keep is not None else KEEP_ALL, seed, max_key=max_key)
        self.groups = GroupedMoments(groups, seed) if groups else None
        self.inception_score: InceptionScoreAccumulator | None = None
        self.class_accuracy: ClassAccuracyAccumulator | None = None

    @property
    def count(self) -> int:
        return self.moments.n

    def update(self, features: np.ndarray, logits: np.ndarray | None, labels: np.ndarray | None,
               start_index: int, predicts_labels: bool = False) -> None:
        """Add the features (and logits) of samples start_index, start_index + 1, ..."""
        self.moments.update(features)
        self.subsample.update(features, start_index=start_index)
        if self.groups is not None:
            self.groups.update(features, start_index=start_index)
        if logits is None:
            return
        if self.inception_score is None:
            self.inception_score = InceptionScoreAccumulator(splits=self.is_splits, seed=self.seed)
        self.inception_score.update(logits=logits, start_index=start_index)
        if predicts_labels and labels is not None:
            if self.class_accuracy is None:
                self.class_accuracy = ClassAccuracyAccumulator()
            self.class_accuracy.update(logits, labels)

    def merge(self, other: "FeatureAccumulator") -> None:
        """Add another part of the stream (gathered with the same settings)."""
        if other.name != self.name:
            raise ValueError(f"cannot merge {other.name!r} features into {self.name!r}")
        self.moments.merge(other.moments)
        self.subsample.merge(other.subsample)
        if (self.groups is None) != (other.groups is None):
            raise ValueError("cannot merge parts gathered with and without interval groups")
        if self.groups is not None:
            self.groups.merge(other.groups)
        for attr in ("inception_score", "class_accuracy"):
            theirs = getattr(other, attr)
            if theirs is None:
                continue
            if getattr(self, attr) is None:
                setattr(self, attr, type(theirs)() if attr == "class_accuracy" else
                        InceptionScoreAccumulator(splits=theirs.splits, seed=theirs.seed))
            getattr(self, attr).merge(theirs)

    def finish(self) -> StreamFeatures:
        if self.count < 2:
            raise ValueError(f"need at least 2 images, the stream had {self.count}")
        return StreamFeatures(FeatureStats.from_accumulators(self.name, self.moments, self.subsample),
                              self.inception_score, self.class_accuracy, self.groups, self.seed)


def _as_list(extractors) -> list[FeatureExtractor]:
    return list(extractors) if isinstance(extractors, (list, tuple)) else [extractors]


def accumulate_features(extractors: FeatureExtractor | Sequence[FeatureExtractor], batches: Iterable,
                        *, keep: int | None = 10_000, seed: int = 0, is_splits: int = 10,
                        groups: int | None = None, start_index: int = 0, max_key: int | None = None,
                        finish: bool = True) -> dict:
    """Run every extractor on every batch once; accumulate moments (float64), a kept
    subsample of `keep` features (None: all) chosen by (seed, sample index), IS sums and
    class-accuracy counts, and with `groups` the moments of each interval group too.
    Nothing is written to disk.

    The batches hold samples start_index, start_index + 1, ... With finish=False the
    FeatureAccumulators are returned (a part of a longer stream, to merge), else StreamFeatures."""
    exs = _as_list(extractors)
    names = [e.name for e in exs]
    if len(set(names)) != len(names):
        raise ValueError(f"extractor names must be distinct: {names}")
    gathered = {e.name: FeatureAccumulator(e.name, keep=keep, seed=seed, is_splits=is_splits, groups=groups,
                                           max_key=max_key) for e in exs}
    n_seen = start_index
    for batch in as_batches(batches):
        n = batch.images.shape[0]
        if n == 0:
            continue
        for ex in exs:
            feats, logits = ex(batch.images)
            gathered[ex.name].update(feats, logits, batch.labels, n_seen, getattr(ex, "predicts_labels", False))
        n_seen += n
    if not finish:
        return gathered
    return {name: part.finish() for name, part in gathered.items()}


def compute_feature_stats(extractors: FeatureExtractor | Sequence[FeatureExtractor], batches: Iterable,
                          *, keep: int | None = 10_000, seed: int = 0) -> dict[str, FeatureStats]:
    """Statistics of an image stream per extractor (e.g. the reference statistics of the
    real data): mean, covariance, N and `keep` kept features."""
    out = accumulate_features(extractors, batches, keep=keep, seed=seed)
    return {name: sf.stats for name, sf in out.items()}
