import numpy as np
import torch

from pipeline.metrics import precision_recall
from pipeline.metrics.precision_recall import knn_radii


def test_knn_radii_match_brute_force_in_small_blocks():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 4))
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    expected = np.sort(d, axis=1)[:, 3]  # column 0 is the point itself
    got = knn_radii(torch.as_tensor(x), k=3, budget_bytes=50 * 8 * 7)  # 7-row blocks
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)


def test_identical_clouds():
    x = np.random.default_rng(1).normal(size=(500, 8))
    assert precision_recall(x, x.copy(), k=3) == (1.0, 1.0)


def test_disjoint_clouds():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(400, 8))
    fake = rng.normal(size=(400, 8)) + 100.0
    assert precision_recall(real, fake) == (0.0, 0.0)


def test_fake_covering_half_the_real_support():
    rng = np.random.default_rng(3)
    real = rng.uniform(0, 1, size=(3000, 2))
    fake = rng.uniform(0, 1, size=(1500, 2)) * np.array([0.5, 1.0])  # the left half only
    precision, recall = precision_recall(real, fake, k=3, budget_bytes=1 << 20)
    assert precision > 0.97
    assert 0.45 < recall < 0.56


def test_more_neighbours_give_larger_balls():
    rng = np.random.default_rng(4)
    real, fake = rng.normal(size=(600, 4)), rng.normal(size=(600, 4)) + 0.8
    p3, r3 = precision_recall(real, fake, k=3)
    p10, r10 = precision_recall(real, fake, k=10)
    assert p10 >= p3 and r10 >= r3
    assert 0 < p3 < 1 and 0 < r3 < 1
