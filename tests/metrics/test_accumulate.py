import numpy as np
import pytest

from pipeline.metrics import FeatureSubsample, RunningMoments


def _feed(acc, x, sizes):
    start = 0
    for s in sizes:
        acc.update(x[start:start + s])
        start += s
    assert start == len(x)


def test_streaming_moments_equal_one_shot():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(1000, 24)) @ rng.normal(size=(24, 24))).astype(np.float32)
    acc = RunningMoments()
    _feed(acc, x, [1, 7, 250, 2, 500, 240])
    x64 = x.astype(np.float64)
    assert acc.n == 1000
    np.testing.assert_allclose(acc.mean, x64.mean(0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(acc.cov, np.cov(x64, rowvar=False), rtol=1e-11, atol=1e-11)


def test_large_offset_does_not_lose_precision():
    rng = np.random.default_rng(1)
    x = 1e6 + rng.normal(size=(2000, 4))
    acc = RunningMoments()
    _feed(acc, x, [500] * 4)
    np.testing.assert_allclose(acc.cov, np.cov(x, rowvar=False), rtol=1e-8)


def test_merge_equals_single_stream():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 5))
    a, b, whole = RunningMoments(), RunningMoments(), RunningMoments()
    a.update(x[:120])
    b.update(x[120:])
    whole.update(x)
    a.merge(b)
    np.testing.assert_allclose(a.mean, whole.mean, atol=1e-13)
    np.testing.assert_allclose(a.cov, whole.cov, atol=1e-12)


def test_dimension_mismatch_raises():
    acc = RunningMoments()
    acc.update(np.zeros((3, 4)))
    with pytest.raises(ValueError):
        acc.update(np.zeros((3, 5)))


def test_subsample_independent_of_batch_sizes_and_uniform():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5000, 3)).astype(np.float32)
    x[:, 0] = np.arange(5000)  # the first column is the sample index
    a, b = FeatureSubsample(400, seed=5), FeatureSubsample(400, seed=5)
    _feed(a, x, [5000])
    _feed(b, x, [3, 97, 1000, 1, 2899, 1000])
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.features, b.features)
    assert a.features.shape == (400, 3)
    np.testing.assert_array_equal(a.features[:, 0], a.indices)
    # spread over the whole stream, not the first 400
    assert a.indices.max() > 4000 and 2000 < a.indices.mean() < 3000
    # another seed keeps another subset
    c = FeatureSubsample(400, seed=6)
    _feed(c, x, [5000])
    assert len(np.intersect1d(a.indices, c.indices)) < 200


def test_subsample_keeps_everything_when_small():
    x = np.arange(30, dtype=np.float32).reshape(10, 3)
    s = FeatureSubsample(50, seed=0)
    _feed(s, x, [4, 6])
    np.testing.assert_array_equal(s.features, x)


def test_grouped_moments_do_not_depend_on_batches_and_add_up_to_the_total():
    from pipeline.metrics import GroupedMoments

    x = np.random.default_rng(9).normal(size=(137, 5)) + 3.0
    one, many = GroupedMoments(10, seed=2), GroupedMoments(10, seed=2)
    one.update(x)
    for start in range(0, 137, 19):
        many.update(x[start:start + 19], start_index=start)
    assert one.sizes.tolist() == many.sizes.tolist() and one.sizes.sum() == 137 and (one.sizes > 0).all()
    for g in range(10):
        np.testing.assert_allclose(one.moments[g].mean, many.moments[g].mean, rtol=1e-12)
    rest = one.without(4)
    np.testing.assert_allclose(rest.cov, np.cov(x[np.flatnonzero(_groups(137, 10, 2) != 4)], rowvar=False), rtol=1e-10)
    assert GroupedMoments(10, seed=3).groups == 10 and not np.array_equal(_groups(137, 10, 3), _groups(137, 10, 2))


def _groups(n, groups, seed):
    from pipeline.metrics._hashing import sample_groups

    return sample_groups(np.arange(n, dtype=np.uint64), groups, seed)
