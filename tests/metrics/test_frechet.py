import numpy as np
import pytest

from pipeline.metrics import ImaginaryComponentError, frechet_distance


def test_identical_feature_sets_give_zero():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 16)) @ rng.normal(size=(16, 16))
    mu, sigma = x.mean(0), np.cov(x, rowvar=False)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8


def test_diagonal_gaussians_match_closed_form():
    rng = np.random.default_rng(1)
    d = 10
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = rng.uniform(0.1, 3.0, size=d), rng.uniform(0.1, 3.0, size=d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2.0 * np.sqrt(s1 * s2))
    got = frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
    assert got == pytest.approx(expected, rel=1e-10, abs=1e-10)


def test_rotated_gaussians_match_closed_form():
    # Rotating both Gaussians by the same orthogonal Q leaves the distance unchanged.
    rng = np.random.default_rng(2)
    d = 6
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = rng.uniform(0.5, 2.0, size=d), rng.uniform(0.5, 2.0, size=d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2.0 * np.sqrt(s1 * s2))
    got = frechet_distance(q @ mu1, q @ np.diag(s1) @ q.T, q @ mu2, q @ np.diag(s2) @ q.T)
    assert got == pytest.approx(expected, rel=1e-8)


def test_one_dimensional():
    # (m1 - m2)^2 + (sd1 - sd2)^2
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[1.0]])) \
        == pytest.approx(4.0 + 1.0)


def test_singular_covariances_use_eps_fallback():
    rng = np.random.default_rng(3)
    # 5 samples in 20 dims: rank-deficient covariances
    a, b = rng.normal(size=(5, 20)), rng.normal(size=(5, 20))
    with pytest.warns(RuntimeWarning, match="singular"):
        # zero covariance: S1 S2 = 0, sqrtm of the zero matrix is not finite in scipy
        val0 = frechet_distance(np.zeros(20), np.zeros((20, 20)), np.ones(20), np.zeros((20, 20)))
    assert val0 == pytest.approx(20.0, abs=1e-4)
    val = frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert np.isfinite(val) and val > 0


def test_matches_cleanfid_implementation():
    from cleanfid.fid import frechet_distance as cleanfid_fd

    rng = np.random.default_rng(4)
    a = rng.normal(size=(300, 32))
    b = rng.normal(size=(300, 32)) * 1.3 + 0.2
    args = (a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert frechet_distance(*args) == pytest.approx(float(cleanfid_fd(*args)), rel=1e-9)


def test_invalid_covariance_raises_on_imaginary_part():
    with pytest.raises(ImaginaryComponentError):
        frechet_distance(np.zeros(2), np.diag([-1.0, 1.0]), np.zeros(2), np.eye(2))


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
