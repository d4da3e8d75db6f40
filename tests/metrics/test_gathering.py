"""Features gathered in parts (disjoint index ranges, as workers gather chunks or shards) merge into
what one pass gathers: the same metrics, intervals and protocol."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.metrics import (FeatureAccumulator, FeatureStats, FeatureSubsample, TorchModuleExtractor,
                              accumulate_features, batches_from_arrays, kept_key_threshold, metrics_from_features)
from tests.metrics.conftest import quadrant_images

N, KEEP, GROUPS = 300, 90, 10
SPLITS = [(0, 64), (64, 100), (100, 230), (230, 300)]  # uneven parts, as chunks and shards are


def _extractor(tiny_classifier):
    return TorchModuleExtractor(tiny_classifier, name="evalnet", batch_size=32)


def _in_parts(extractor, images, labels, order, max_key):
    parts = {}
    for start, stop in SPLITS:
        parts[start] = accumulate_features(
            extractor, batches_from_arrays(images[start:stop], labels[start:stop], 50), keep=KEEP, seed=3,
            groups=GROUPS, start_index=start, max_key=max_key, finish=False)["evalnet"]
    merged = FeatureAccumulator("evalnet", keep=KEEP, seed=3, groups=GROUPS)
    for start in order:
        merged.merge(parts[start])
    return merged.finish(), parts


@pytest.mark.parametrize("order", [[0, 64, 100, 230], [230, 0, 100, 64]])
def test_parts_merge_into_the_single_pass(tiny_classifier, order):
    images, labels = quadrant_images(N, seed=11)
    extractor = _extractor(tiny_classifier)
    whole = accumulate_features(extractor, batches_from_arrays(images, labels, 50), keep=KEEP, seed=3,
                                groups=GROUPS)["evalnet"]
    threshold = kept_key_threshold(N, KEEP, seed=3)
    merged, parts = _in_parts(extractor, images, labels, order, threshold)
    # a worker's part holds only features the merged subsample keeps
    assert sum(p.subsample.indices.size for p in parts.values()) == KEEP

    a, b = whole.stats, merged.stats
    assert a.num_samples == b.num_samples == N
    np.testing.assert_allclose(b.mean, a.mean, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(b.cov, a.cov, rtol=1e-10, atol=1e-13)
    assert np.array_equal(a.feature_indices, b.feature_indices) and np.array_equal(a.features, b.features)
    np.testing.assert_allclose(merged.inception_score.per_split(), whole.inception_score.per_split(), rtol=1e-12)
    assert (merged.class_accuracy.correct, merged.class_accuracy.total) == (whole.class_accuracy.correct, N)
    assert np.array_equal(merged.groups.sizes, whole.groups.sizes)

    reference = FeatureStats.from_features("evalnet", extractor(quadrant_images(200, seed=5)[0])[0], keep=KEEP, seed=1)
    one = metrics_from_features(whole, reference, kid_subsets=20, kid_subset_size=50, pr_k=3)
    two = metrics_from_features(merged, reference, kid_subsets=20, kid_subset_size=50, pr_k=3)
    assert one.protocol == two.protocol and set(one.metrics) == set(two.metrics)
    assert two.metrics["fd_evalnet"] == pytest.approx(one.metrics["fd_evalnet"], rel=1e-9)
    for name in ("kid_evalnet_mean", "kid_evalnet_std", "precision_evalnet", "recall_evalnet", "class_accuracy"):
        assert two.metrics[name] == one.metrics[name], name
    assert two.metrics["is_evalnet"] == pytest.approx(one.metrics["is_evalnet"], rel=1e-12)
    assert set(one.intervals) == set(two.intervals) == {"fd_evalnet", "kid_evalnet_mean", "precision_evalnet",
                                                         "recall_evalnet", "is_evalnet", "class_accuracy"}
    for name, interval in one.intervals.items():
        exact = name in ("kid_evalnet_mean", "precision_evalnet", "recall_evalnet", "class_accuracy")
        assert two.intervals[name] == (interval if exact else pytest.approx(interval, rel=1e-9)), name


def test_the_kept_key_threshold_is_the_subsamples_largest_key():
    from pipeline.metrics._hashing import index_hash

    sub = FeatureSubsample(KEEP, seed=3)
    sub.update(np.zeros((N, 2)))
    threshold = kept_key_threshold(N, KEEP, seed=3)
    assert threshold == int(index_hash(sub.indices.astype(np.uint64), 3).max())
    assert kept_key_threshold(KEEP, KEEP, seed=3) is None and kept_key_threshold(N, 0) is None


def test_parts_gathered_differently_refuse_to_merge():
    with pytest.raises(ValueError, match="with and without interval groups"):
        FeatureAccumulator("evalnet", groups=10).merge(FeatureAccumulator("evalnet"))
    with pytest.raises(ValueError, match="cannot merge 'inception' features into 'evalnet'"):
        FeatureAccumulator("evalnet").merge(FeatureAccumulator("inception"))
    with pytest.raises(ValueError, match="seed"):
        FeatureSubsample(5, seed=1).merge(FeatureSubsample(5, seed=2))
