import numpy as np
import pytest

from pipeline.metrics import FeatureStats, StatsIntegrityError


def _stats(seed=0, keep=None):
    x = np.random.default_rng(seed).normal(size=(200, 6)).astype(np.float32)
    return FeatureStats.from_features("evalnet", x, keep=keep), x


def test_from_features_and_roundtrip(tmp_path):
    stats, x = _stats(keep=50)
    assert stats.num_samples == 200 and stats.features.shape == (50, 6)
    np.testing.assert_allclose(stats.cov, np.cov(x.astype(np.float64), rowvar=False), atol=1e-12)
    path = tmp_path / "ref.npz"
    sid = stats.save(path)
    assert sid == stats.stats_id and len(sid) == 64
    with np.load(path, allow_pickle=False) as z:  # plain arrays only
        assert set(z.files) >= {"mean", "cov", "features", "extractor", "stats_id"}
    loaded = FeatureStats.load(path)
    assert loaded.stats_id == sid and loaded.extractor == "evalnet" and loaded.num_samples == 200
    np.testing.assert_array_equal(loaded.features, stats.features)
    np.testing.assert_array_equal(loaded.cov, stats.cov)


def test_id_depends_on_contents():
    a, _ = _stats(0)
    b, _ = _stats(1)
    assert a.stats_id != b.stats_id
    assert a.stats_id == _stats(0)[0].stats_id
    renamed = FeatureStats("inception", a.num_samples, a.mean, a.cov, a.features, a.feature_indices)
    assert renamed.stats_id != a.stats_id


def test_tampered_file_is_rejected(tmp_path):
    stats, _ = _stats()
    path = tmp_path / "ref.npz"
    stats.save(path)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["mean"] = arrays["mean"] + 1e-3
    np.savez(path, **arrays)
    with pytest.raises(StatsIntegrityError):
        FeatureStats.load(path)
