"""The intervals inside the scoring path: every metric of evaluate_samples carries one, the point
values do not change, the groups do not depend on batching, and scoring flattens them into
``<metric>_ci_low`` / ``<metric>_ci_high``."""
from types import SimpleNamespace

import numpy as np
import pytest

from pipeline.metrics import TorchModuleExtractor, batches_from_arrays, compute_feature_stats, evaluate_samples

from .conftest import quadrant_images

METRICS = ("fd_evalnet", "kid_evalnet_mean", "precision_evalnet", "recall_evalnet", "is_evalnet", "class_accuracy")
KW = dict(keep=200, seed=3, is_splits=4, kid_subsets=10, kid_subset_size=50, seed_range=[0, 200])


@pytest.fixture
def evalnet(tiny_classifier):
    return TorchModuleExtractor(tiny_classifier, "evalnet", batch_size=16)


@pytest.fixture
def reference(evalnet):
    real, labels = quadrant_images(300, seed=1)
    return compute_feature_stats(evalnet, batches_from_arrays(real, labels, 64), keep=None)["evalnet"]


def test_every_metric_has_an_interval_and_the_numbers_do_not_move(evalnet, reference):
    fake, labels = quadrant_images(200, seed=2)
    fake[:60] //= 2  # darker images: a visible distance to the reference
    with_ci = evaluate_samples(evalnet, batches_from_arrays(fake, labels, 50), reference, **KW)["evalnet"]
    other_batches = evaluate_samples(evalnet, batches_from_arrays(fake, labels, 17), reference, **KW)["evalnet"]
    without = evaluate_samples(evalnet, batches_from_arrays(fake, labels, 50), reference, ci_groups=None,
                               **KW)["evalnet"]
    assert without.intervals == {} and "ci" not in without.protocol
    assert with_ci.metrics == without.metrics  # the intervals never change a point value
    assert set(with_ci.intervals) == set(METRICS)
    assert with_ci.protocol["ci"] == {"level": 0.95, "groups": 10, "method": "pipeline.metrics.intervals/1"}
    for name, (low, high) in with_ci.intervals.items():
        assert low <= high, name
        assert other_batches.intervals[name] == pytest.approx((low, high), rel=1e-9, abs=1e-12), name
        if name in ("precision_evalnet", "recall_evalnet", "class_accuracy"):
            assert 0.0 <= low <= with_ci.metrics[name] <= high <= 1.0, name
    for name in ("kid_evalnet_mean", "is_evalnet"):  # centred on the value
        low, high = with_ci.intervals[name]
        assert low < with_ci.metrics[name] < high and (low + high) / 2 == pytest.approx(with_ci.metrics[name])
    assert with_ci.intervals["fd_evalnet"][1] > 0


def test_scoring_flattens_intervals_into_ci_columns(evalnet, reference):
    from pipeline.generation.scoring import score_batches

    fake, labels = quadrant_images(120, seed=4)
    cfg = SimpleNamespace(pr_neighbours=3)
    metrics, protocol = score_batches(batches_from_arrays(fake, labels, 40), [evalnet], {"evalnet": reference}, cfg)
    for name in METRICS:
        assert metrics[f"{name}_ci_low"] <= metrics[f"{name}_ci_high"], name
    assert protocol["evalnet"]["ci"]["groups"] == 10 and protocol["evalnet"]["kid_draws"] == "cleanfid"
    ci_columns = {k for k in metrics if "_ci_" in k}
    assert ci_columns == {f"{name}_ci_{side}" for name in METRICS for side in ("low", "high")}


def test_too_few_images_give_no_interval_rather_than_a_wrong_one(evalnet, reference):
    fake, labels = quadrant_images(6, seed=5)
    result = evaluate_samples(evalnet, batches_from_arrays(fake, labels, 6), reference,
                              **{**KW, "is_splits": 1, "kid_subset_size": 6})["evalnet"]
    assert "is_evalnet" not in result.intervals  # one split: no spread to measure
    assert all(np.isfinite(v).all() for v in result.intervals.values())
