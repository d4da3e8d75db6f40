"""Kernel Inception Distance (Binkowski et al. 2018, "Demystifying MMD GANs").

The squared MMD between the two feature distributions under the cubic polynomial kernel

    k(x, y) = (x . y / d + 1)^3,        d = feature dimension,

estimated without bias on random subsets of m points from each set:

    MMD^2_u = 1/(m(m-1)) sum_{i != j} k(x_i, x_j)
            + 1/(m(m-1)) sum_{i != j} k(y_i, y_j)
            - 2/m^2      sum_{i, j}   k(x_i, y_j).

The score is the mean over `num_subsets` subsets, reported with its standard deviation. The
subsets are clean-fid's own (cleanfid.fid.kernel_distance after numpy.random.seed(seed)), so on
the same features the mean is clean-fid's KID exactly. Named KID only for clean-fid's Inception
features; otherwise kid_<feature space>.
"""
from __future__ import annotations

import numpy as np

__all__ = ["polynomial_kernel", "mmd2_unbiased", "kid_subset_values", "kid"]


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x . y / d + 1)^3 for all pairs of rows."""
    d = x.shape[1]
    return (x @ y.T / d + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased estimate of MMD^2 between the samples x (m, d) and y (n, d)."""
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise ValueError("the unbiased MMD estimate needs at least 2 points per set")
    k_xx = polynomial_kernel(x, x)
    k_yy = polynomial_kernel(y, y)
    k_xy = polynomial_kernel(x, y)
    term_xx = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    term_yy = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    term_xy = k_xy.sum() / (m * n)
    return float(term_xx + term_yy - 2.0 * term_xy)


def kid_subset_values(
    features_a: np.ndarray,
    features_b: np.ndarray,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """The unbiased MMD^2 of each of `num_subsets` random subset pairs of m = min(subset_size, n_a, n_b)
    points, drawn as cleanfid.fid.kernel_distance(features_a, features_b) draws them from numpy's
    global RNG after numpy.random.seed(seed): a legacy RandomState(seed) (its own, so the global
    state is untouched), and per subset first m rows of `features_b`, then m rows of `features_a`,
    each without replacement."""
    a = np.asarray(features_a, dtype=np.float64)
    b = np.asarray(features_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must be (n, d) with the same d: {a.shape}, {b.shape}")
    if num_subsets < 1:
        raise ValueError("num_subsets must be >= 1")
    m = min(subset_size, a.shape[0], b.shape[0])
    rng = np.random.RandomState(seed)
    values = np.empty(num_subsets, dtype=np.float64)
    for s in range(num_subsets):
        xb = b[rng.choice(b.shape[0], m, replace=False)]
        xa = a[rng.choice(a.shape[0], m, replace=False)]
        values[s] = mmd2_unbiased(xb, xa)
    return values


def kid(
    features_a: np.ndarray,
    features_b: np.ndarray,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """(mean, std) of the unbiased MMD^2 over clean-fid's random subsets (:func:`kid_subset_values`);
    the mean equals cleanfid.fid.kernel_distance(features_a, features_b, num_subsets, subset_size)
    after numpy.random.seed(seed)."""
    values = kid_subset_values(features_a, features_b, num_subsets, subset_size, seed)
    return float(values.mean()), float(values.std())
