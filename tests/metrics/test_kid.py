import numpy as np
import pytest

from pipeline.metrics import kid
from pipeline.metrics.kid import mmd2_unbiased, polynomial_kernel


def test_same_distribution_is_about_zero_and_shift_is_positive():
    rng = np.random.default_rng(0)
    d = 16
    a = rng.normal(size=(1500, d))
    b = rng.normal(size=(1500, d))
    shifted = rng.normal(size=(1500, d)) + 0.5
    same_mean, same_std = kid(a, b, num_subsets=20, subset_size=500, seed=1)
    shift_mean, shift_std = kid(a, shifted, num_subsets=20, subset_size=500, seed=1)
    assert abs(same_mean) < 3 * same_std + 1e-3
    assert shift_mean > 10 * max(shift_std, same_std, 1e-6)
    # the same subsets for the same seed
    assert kid(a, shifted, num_subsets=20, subset_size=500, seed=1)[0] == shift_mean


def test_unbiased_estimator_by_brute_force():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(5, 3)) + 0.3
    k = lambda u, v: (u @ v / 3 + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    yy = sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / (5 * 4)
    xy = sum(k(x[i], y[j]) for i in range(7) for j in range(5)) / (7 * 5)
    assert mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)
    assert polynomial_kernel(x, y).shape == (7, 5)


def test_matches_cleanfid_kernel_distance_on_full_sets():
    # With one subset of all points, subset selection is only a permutation: no RNG involved.
    from cleanfid.fid import kernel_distance

    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(200, 10)), rng.normal(size=(200, 10)) * 1.2
    ours, _ = kid(a, b, num_subsets=1, subset_size=200, seed=0)
    assert ours == pytest.approx(kernel_distance(a, b, num_subsets=1, max_subset_size=200), rel=1e-10)


@pytest.mark.parametrize("n_a, n_b, subsets, size, seed", [(300, 250, 7, 100, 0), (120, 400, 5, 1000, 3)])
def test_equals_cleanfid_kernel_distance_with_its_own_subset_draws(n_a, n_b, subsets, size, seed):
    """Same features, same seed: clean-fid's kernel_distance (global numpy RNG seeded) and ours agree
    to round-off, with subsets smaller than the sets (the draws matter) and without touching the
    global RNG."""
    from cleanfid.fid import kernel_distance

    rng = np.random.default_rng(5)
    a = rng.normal(size=(n_a, 12))
    b = rng.normal(size=(n_b, 12)) * 1.1 + 0.1
    state = np.random.get_state()
    ours, _ = kid(a, b, num_subsets=subsets, subset_size=size, seed=seed)
    assert np.array_equal(np.random.get_state()[1], state[1])
    try:
        np.random.seed(seed)
        theirs = kernel_distance(a, b, num_subsets=subsets, max_subset_size=size)
    finally:
        np.random.set_state(state)
    assert ours == pytest.approx(theirs, rel=1e-10)
    # and a different seed draws different subsets
    assert kid(a, b, num_subsets=subsets, subset_size=size, seed=seed + 1)[0] != pytest.approx(ours, rel=1e-6)
