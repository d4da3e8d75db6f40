"""Calibration of the metric intervals (pipeline.metrics.intervals): over many repetitions on data
whose true value is known, the 95% interval covers the truth in at least ~90% of them, and the
tests say where a naive interval would not. Small d, vectorised, seconds in all."""
import numpy as np
import pytest
import torch

from pipeline.metrics import intervals as ci
from pipeline.metrics.accumulate import GroupedMoments
from pipeline.metrics.frechet import frechet_distance
from pipeline.metrics.inception_score import InceptionScoreAccumulator, softmax
from pipeline.metrics.kid import kid
from pipeline.metrics.precision_recall import precision_recall, precision_recall_details

REPS = 300


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _gaussians(d, rng):
    a = rng.normal(size=(d, d)) / np.sqrt(d)
    b = rng.normal(size=(d, d)) / np.sqrt(d)
    return np.zeros(d), a @ a.T + 0.5 * np.eye(d), np.full(d, 0.05), 1.2 * (b @ b.T + 0.5 * np.eye(d))


def _fd_coverage(d, n, reps, seed):
    rng = np.random.default_rng(seed)
    mu_r, cov_r, mu_g, cov_g = _gaussians(d, rng)
    truth = frechet_distance(mu_g, cov_g, mu_r, cov_r)  # closed form between the two Gaussians
    chol = np.linalg.cholesky(cov_g)
    covered, above = 0, 0
    for rep in range(reps):
        x = mu_g + rng.normal(size=(n, d)) @ chol.T
        groups = GroupedMoments(ci.GROUPS, seed=rep)
        groups.update(x)
        interval = ci.frechet_distance_interval(groups, mu_r, cov_r)
        covered += interval.low <= truth <= interval.high
        plain = frechet_distance(x.mean(0), np.cov(x, rowvar=False), mu_r, cov_r)  # the N-image value
        above += plain - truth > (interval.high - interval.low) / 2
    return covered / reps, above / reps, truth


def test_frechet_distance_interval_covers_the_closed_form_distance():
    coverage, _, truth = _fd_coverage(d=6, n=400, reps=200, seed=0)
    assert truth > 1.0
    assert 0.90 <= coverage <= 0.995


def test_frechet_distance_interval_corrects_the_small_n_bias():
    """At d / N where the N-image FD sits above the truth by more than the interval's half-width
    in most repetitions (an interval around it would miss), the jackknife centre still covers."""
    coverage, above, _ = _fd_coverage(d=48, n=400, reps=60, seed=1)
    assert above > 0.8
    assert coverage >= 0.88


def test_wilson_covers_known_proportions_for_class_accuracy_and_precision():
    rng = np.random.default_rng(2)
    for p, n in ((0.1, 200), (0.5, 200), (0.93, 500), (0.99, 1000)):
        hits = rng.binomial(n, p, size=2000)
        bounds = np.array([ci.wilson_interval(int(h), n) for h in hits])
        coverage = np.mean((bounds[:, 0] <= p) & (p <= bounds[:, 1]))
        assert 0.92 <= coverage <= 0.98, (p, n, coverage)
    assert ci.wilson_interval(0, 0) is None
    low, high = ci.wilson_interval(0, 50)
    assert low == 0.0 and 0 < high < 0.1
    for n in range(1, 300):  # rounding never leaves the estimate outside its own interval (0/40 did)
        assert ci.wilson_interval(0, n)[0] == 0.0 and ci.wilson_interval(n, n)[1] == 1.0


def test_precision_interval_covers_a_known_proportion_of_fakes_inside_the_real_manifold():
    """Fakes are copies of real points (inside the manifold) with probability p, far away otherwise:
    the true precision is p, and the Wilson interval on the detailed result covers it."""
    rng = np.random.default_rng(3)
    real = rng.normal(size=(150, 3))
    p, n = 0.7, 200
    covered = 0
    for _ in range(200):
        inside = rng.random(n) < p
        fake = np.where(inside[:, None], real[rng.integers(0, len(real), n)] + 1e-6, 100.0 + rng.normal(size=(n, 3)))
        pr = precision_recall_details(real, fake, k=3)
        low, high = ci.wilson_interval(pr.fake_inside, pr.num_fake)
        covered += low <= p <= high
        assert pr.precision == pr.fake_inside / n
    assert 0.90 <= covered / 200 <= 0.99


def test_recall_interval_covers_the_expected_recall_at_this_n():
    """Recall given the real set depends on the fake sample only; its expectation at this N is
    measured on independent repetitions, then the jackknife intervals of new ones must cover it."""
    rng = np.random.default_rng(4)
    real = rng.normal(size=(120, 3))

    def fakes():
        return 0.9 * rng.normal(size=(150, 3)) + 0.3

    truth = np.mean([precision_recall(real, fakes(), k=3)[1] for _ in range(400)])
    covered = 0
    for rep in range(200):
        groups = ci.sample_groups(np.arange(150, dtype=np.uint64), ci.GROUPS, rep)
        pr = precision_recall_details(real, fakes(), k=3, fake_groups=groups)
        interval = ci.recall_interval(pr.recall, pr.recall_without, pr.group_sizes, k=3)
        covered += interval.low <= truth <= interval.high
    assert covered / 200 >= 0.88


def test_leave_one_group_out_recall_equals_recomputing_without_the_group():
    rng = np.random.default_rng(5)
    real, fake = rng.normal(size=(80, 4)), rng.normal(size=(90, 4)) + 0.2
    groups = ci.sample_groups(np.arange(90, dtype=np.uint64), 4, seed=0)
    pr = precision_recall_details(real, fake, k=3, fake_groups=groups)
    for g in range(4):
        assert pr.recall_without[g] == pytest.approx(precision_recall(real, fake[groups != g], k=3)[1], abs=1e-12)
    assert pr.group_sizes.sum() == 90
    assert (pr.precision, pr.recall) == precision_recall(real, fake, k=3)
    # a lopsided split: most nearest neighbours of every point are in group 0, so the radii
    # without group 0 come from the exact fallback
    lopsided = (np.arange(90) >= 84).astype(np.int64)
    pr = precision_recall_details(real, fake, k=3, fake_groups=lopsided)
    for g in range(2):
        assert pr.recall_without[g] == pytest.approx(precision_recall(real, fake[lopsided != g], k=3)[1], abs=1e-12)


def test_kid_interval_covers_the_population_mmd():
    """Zero-mean isotropic Gaussians N(0, a^2 I) and N(0, b^2 I): under k(x, y) = (x.y / d + 1)^3
    the population MMD^2 is 3 (a^2 - b^2)^2 / d."""
    rng = np.random.default_rng(6)
    d, n, a, b = 8, 600, 1.0, 1.25
    truth = 3 * (a * a - b * b) ** 2 / d
    covered = 0
    for rep in range(120):
        gen, ref = a * rng.normal(size=(n, d)), b * rng.normal(size=(n, d))
        value, _ = kid(ref, gen, num_subsets=10, subset_size=100, seed=rep)
        interval = ci.kid_interval(value, ref, np.arange(n), gen, np.arange(n), seed=rep)
        covered += interval.low <= truth <= interval.high
    assert covered / 120 >= 0.90


def test_inception_score_interval_covers_the_expected_split_score():
    """IS is the mean of its per-split scores; the t interval over splits covers the expected score
    of a split of this size (measured by Monte Carlo on fresh draws of the same distribution)."""
    rng = np.random.default_rng(7)
    classes, n, splits = 6, 400, 10
    centres = rng.normal(size=(classes, classes)) * 2.0

    def logits(count):
        return centres[rng.integers(0, classes, count)] + rng.normal(size=(count, classes))

    def score_of(probs):  # exp(E KL(p(y|x) || p(y))) of one split
        marginal = probs.mean(0)
        return np.exp(np.mean(np.sum(probs * (np.log(probs) - np.log(marginal)), axis=1)))

    truth = np.mean([score_of(softmax(logits(n // splits))) for _ in range(4000)])
    covered = 0
    for rep in range(REPS):
        acc = InceptionScoreAccumulator(splits=splits, seed=rep)
        acc.update(logits=logits(n))
        interval = ci.t_interval(acc.per_split())
        covered += interval.low <= truth <= interval.high
    assert covered / REPS >= 0.88  # splits are random (hash), so not exactly n / splits each


def test_grouped_jackknife_is_the_textbook_one_for_equal_groups():
    """Equal groups: centre G theta - (G - 1) mean(theta_-g), variance sum (p_g - mean p)^2 / (G (G - 1))."""
    est, loo = 2.0, np.array([2.1, 1.9, 2.05, 1.95, 2.2])
    centre, interval = ci.grouped_jackknife(est, loo, [10] * 5)
    pseudo = 5 * est - 4 * loo
    assert centre == pytest.approx(pseudo.mean())
    half = ci._t(0.95, 4) * np.sqrt(np.sum((pseudo - pseudo.mean()) ** 2) / (5 * 4))
    assert (interval.low, interval.high) == pytest.approx((centre - half, centre + half))
    assert ci.grouped_jackknife(est, loo[:1], [10]) is None


def test_comparisons_overlap_not_clearly_worse_and_shared_ranks():
    assert ci.intervals_overlap(1.0, 2.0, 1.5, 3.0) and ci.intervals_overlap(1.0, 2.0, 2.0, 3.0)
    assert not ci.intervals_overlap(1.0, 2.0, 2.1, 3.0)
    assert ci.intervals_overlap(1.0, 2.0, None, float("nan"))  # no interval: never called different
    # FD-like (lower is better): the best is row 0 [0.9, 1.1]
    values = [1.0, 1.2, 1.5, 1.3, np.nan]
    lows = [0.9, 1.05, 1.4, 1.15, np.nan]
    highs = [1.1, 1.35, 1.6, 1.45, np.nan]
    assert ci.not_clearly_worse(values, lows, highs, lower_is_better=True).tolist() == [True, True, False, False, False]
    # row 3 overlaps row 1 but not the best: one row (the best) is clearly better, so rank 2; row 2
    # overlaps only row 3: two rows are clearly better, rank 3
    assert ci.shared_ranks(values, lows, highs, lower_is_better=True).tolist() == [1, 1, 3, 2, 0]
    # higher is better (precision-like)
    assert ci.shared_ranks([0.5, 0.7, 0.69], [0.45, 0.68, 0.6], [0.55, 0.72, 0.75], False).tolist() == [3, 1, 1]
    assert ci.not_clearly_worse([0.5, 0.7, 0.69], [0.45, 0.68, 0.6], [0.55, 0.72, 0.75], False).tolist() == [
        False, True, True]
    with pytest.raises(ValueError):
        ci.shared_ranks([1.0, 2.0], [1.0], [2.0, 3.0], True)


def test_shared_ranks_never_tie_a_row_with_one_clearly_better_below_rank_1():
    # B's wide interval overlaps both C and D, which are clearly apart: C and D must not share a rank
    values, lows, highs = [1.0, 2.0, 2.1, 3.5], [0.9, 1.5, 1.95, 3.4], [1.1, 4.0, 2.25, 3.6]
    ranks = ci.shared_ranks(values, lows, highs, lower_is_better=True)
    assert ranks.tolist() == [1, 2, 2, 3]
    # and in general, on random intervals: rank 1 is exactly "not clearly worse", and a row clearly
    # better than another below rank 1 always has the smaller rank
    rng = np.random.default_rng(0)
    for _ in range(200):
        v = rng.normal(size=12)
        half = rng.uniform(0.05, 1.0, size=12)
        lo, hi = v - half, v + half * rng.uniform(0.5, 1.5, size=12)
        for lower in (True, False):
            r = ci.shared_ranks(v, lo, hi, lower)
            assert ((r == 1) == ci.not_clearly_worse(v, lo, hi, lower)).all()
            for a in range(12):
                for b in range(12):
                    clearly = hi[a] < lo[b] if lower else lo[a] > hi[b]
                    if clearly and r[b] > 1:
                        assert r[a] < r[b]


def test_comparisons_take_missing_values_of_any_kind():
    import pandas as pd

    assert ci.intervals_overlap(1.0, 2.0, np.float32("nan"), 3.0)  # a float32 NaN is missing, not a bound
    assert ci.intervals_overlap(1.0, 2.0, pd.NA, pd.NA)
    assert not ci.intervals_overlap(1.0, 2.0, np.float32(2.5), 3.0)
    lows = pd.array([0.9, pd.NA, 1.4], dtype="Float64")
    highs = pd.array([1.1, pd.NA, 1.6], dtype="Float64")
    assert ci.not_clearly_worse([1.0, 1.7, 1.5], lows, highs, True).tolist() == [True, True, False]
    assert ci.shared_ranks([1.0, 1.7, 1.5], lows, highs, True).tolist() == [1, 1, 2]
