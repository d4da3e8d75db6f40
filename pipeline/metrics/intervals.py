"""95% intervals for every leaderboard metric, and the comparisons the leaderboard makes with them.

Every interval is over the sampling noise of the generated images: the reference statistics are
common to every row ranked together, so they are held fixed (KID, whose reference side is itself a
10k-feature subsample, is the exception: its blocks resample both sides). The generated samples
are cut into G = 10 groups by a hash of (seed, sample index) (`_hashing.sample_groups`), so the
groups, like the images, do not depend on batches or workers.

- Frechet distance (fid, fd_<space>): delete-a-group jackknife over the G groups (Quenouille-Tukey,
  with Busing, Meijer & van der Leeden 1999 for unequal groups): pseudo-values
  p_g = h_g FD - (h_g - 1) FD_(-g), h_g = N / N_g; centre FD_J = G FD - sum_g (1 - N_g / N) FD_(-g);
  variance (1/G) sum_g (p_g - FD_J)^2 / (h_g - 1); interval FD_J +- t_{G-1} sqrt(var), cut at 0.
  FD's bias is c / N to first order (Chong & Forsyth 2020, "Effectively Unbiased FID"), and the
  jackknife centre removes exactly that term: it is the FID-infinity extrapolation to 1/N -> 0
  through N and N (G - 1) / G. So the interval brackets the population distance (N -> infinity),
  and at small N it can lie below the N-image value `fid`, which stays the protocol's number.
  Cost at N = 50k, d = 2048: per-group moments accumulate with the same X^T X work as the total
  (2 N d^2 = 4e11 flops, next to Inception's ~6e14 for the images) and hold G d^2 float64 = 336 MB;
  then one symmetric eigendecomposition per group plus two (G + 2 of 2048 x 2048, seconds each on
  a CPU): Tr (S R)^(1/2) = sum sqrt(eig(R^(1/2) S R^(1/2))), no general sqrtm.
- Inception Score (is, is_<space>): the score is the mean over its splits, which are disjoint
  random parts of the samples: t interval mean +- t_{S-1} sd / sqrt(S) (batch means).
- KID (kid_mean, kid_<space>_mean): the kept generated and reference features are each cut into
  the G groups; block g's unbiased MMD^2 (generated group g vs reference group g) are G independent
  unbiased estimates of the population MMD^2, whose spread gives the standard error:
  kid_mean +- t_{G-1} sd_blocks / sqrt(G). The block mean and clean-fid's subset average share
  their leading-order variance (Hoeffding), the subset average is the less noisy one, so the
  interval is conservative (about 0.1 of KID's own kernel work).
- precision (precision_<space>): given the real manifold, each fake point is inside or not
  independently: a binomial proportion over the kept fake points, Wilson score interval.
- recall (recall_<space>): delete-a-group jackknife over the fake groups (each left-out set gets its
  own k-NN radii), centred at the estimate (recall's dependence on N is not c / N, so no bias
  correction). One extra pass of comparisons over the real x fake distances per group.
- class_accuracy: binomial over the images, Wilson score interval (conservative for the balanced
  class split, which is a stratified sample).
"""
from __future__ import annotations

import math
from statistics import NormalDist
from typing import NamedTuple, Optional, Sequence

import numpy as np
import torch
from scipy import stats as scipy_stats

from ._hashing import sample_groups
from .accumulate import GroupedMoments, RunningMoments
from .kid import mmd2_unbiased

__all__ = ["LEVEL", "GROUPS", "Interval", "wilson_interval", "t_interval", "grouped_jackknife",
           "frechet_distance_interval", "kid_interval", "recall_interval", "sample_groups",
           "intervals_overlap", "not_clearly_worse", "shared_ranks"]

LEVEL = 0.95
GROUPS = 10


class Interval(NamedTuple):
    low: float
    high: float


def _t(level: float, dof: int) -> float:
    return float(scipy_stats.t.ppf(0.5 + level / 2, dof))


def wilson_interval(successes: int, n: int, level: float = LEVEL) -> Optional[Interval]:
    """Wilson score interval of a binomial proportion (Wilson 1927); None without trials."""
    if n <= 0:
        return None
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # In exact arithmetic the interval holds p (its ends are 0 and 1 at p = 0 and 1); rounding must not lose that.
    return Interval(max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half)))


def t_interval(values: Sequence[float], level: float = LEVEL, centre: Optional[float] = None) -> Optional[Interval]:
    """centre (default: the mean) +- t_{n-1} sd / sqrt(n) of independent estimates; None below 2."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return None
    mid = float(v.mean()) if centre is None else float(centre)
    half = _t(level, v.size - 1) * float(v.std(ddof=1)) / math.sqrt(v.size)
    return Interval(mid - half, mid + half)


def grouped_jackknife(estimate: float, without: Sequence[float], sizes: Sequence[int], level: float = LEVEL,
                      bias_correct: bool = True) -> Optional[tuple[float, Interval]]:
    """(centre, interval) of the delete-a-group jackknife (Busing et al. 1999, unequal groups).

    `estimate` uses all N samples, `without[g]` all but group g's `sizes[g]`. The centre is the
    bias-corrected jackknife estimate, or `estimate` itself with bias_correct=False."""
    loo = np.asarray(without, dtype=np.float64)
    m = np.asarray(sizes, dtype=np.float64)
    if loo.size < 2 or (m <= 0).any() or not np.isfinite(loo).all():
        return None
    n = m.sum()
    h = n / m
    jack = loo.size * estimate - float(((1 - m / n) * loo).sum())
    pseudo = h * estimate - (h - 1) * loo
    half = _t(level, loo.size - 1) * math.sqrt(float(np.mean((pseudo - jack) ** 2 / (h - 1))))
    centre = jack if bias_correct else float(estimate)
    return centre, Interval(centre - half, centre + half)


def _sym_sqrt(cov: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(cov)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance_interval(groups: GroupedMoments, ref_mean: np.ndarray, ref_cov: np.ndarray,
                              level: float = LEVEL, device: str | torch.device = "cpu") -> Optional[Interval]:
    """The FD interval (jackknife over the groups, bias-corrected, cut at 0); None with fewer than
    two non-empty groups or a left-out set of fewer than 2 samples."""
    sizes = groups.sizes
    used = [g for g in range(groups.groups) if sizes[g] > 0]
    if len(used) < 2 or sizes.sum() - sizes[used].max() < 2:
        return None
    f64 = dict(dtype=torch.float64, device=device)
    mu_r = torch.as_tensor(ref_mean, **f64)
    root = _sym_sqrt(torch.as_tensor(ref_cov, **f64))
    trace_r = float(torch.trace(torch.as_tensor(ref_cov, **f64)))

    def fd(moments: RunningMoments) -> float:
        cov = torch.as_tensor(moments.cov, **f64)
        diff = torch.as_tensor(moments.mean, **f64) - mu_r
        product = root @ cov @ root
        cross = torch.linalg.eigvalsh((product + product.T) / 2).clamp(min=0).sqrt().sum()
        return float(diff @ diff + torch.trace(cov) + trace_r - 2 * cross)

    total = RunningMoments()
    for moments in groups.moments:
        total.merge(moments)
    result = grouped_jackknife(fd(total), [fd(groups.without(g)) for g in used], sizes[used], level)
    if result is None:
        return None
    _, interval = result
    return Interval(max(0.0, interval.low), max(0.0, interval.high))


def _groups_of(features: np.ndarray, indices: np.ndarray, groups: int, seed: int) -> np.ndarray:
    if indices.shape[0] != features.shape[0]:
        indices = np.arange(features.shape[0])
    return sample_groups(indices.astype(np.uint64), groups, seed)


def kid_interval(kid_value: float, ref_features: np.ndarray, ref_indices: np.ndarray, gen_features: np.ndarray,
                 gen_indices: np.ndarray, groups: int = GROUPS, seed: int = 0, level: float = LEVEL
                 ) -> Optional[Interval]:
    """kid_value +- t sd / sqrt(B) over the B block estimates MMD^2_u(generated group g, reference group g)."""
    gen_group = _groups_of(gen_features, gen_indices, groups, seed)
    ref_group = _groups_of(ref_features, ref_indices, groups, seed)
    blocks = [mmd2_unbiased(gen_features[gen_group == g], ref_features[ref_group == g]) for g in range(groups)
              if (gen_group == g).sum() >= 2 and (ref_group == g).sum() >= 2]
    return t_interval(blocks, level, centre=kid_value)


def recall_interval(recall: float, recall_without: np.ndarray, group_sizes: np.ndarray, k: int,
                    level: float = LEVEL) -> Optional[Interval]:
    """The recall interval: jackknife over fake groups, centred at the estimate, within [0, 1]."""
    used = group_sizes > 0
    if used.sum() < 2 or group_sizes.sum() - group_sizes[used].max() <= k:
        return None
    result = grouped_jackknife(recall, recall_without[used], group_sizes[used], level, bias_correct=False)
    if result is None:
        return None
    _, interval = result
    return Interval(max(0.0, interval.low), min(1.0, interval.high))


# ----------------------------------------------------------------------------------------------
# Comparisons (what the leaderboard's shared ranks and the full round's selection use)


def _number(value) -> float:
    """A float, NaN for a missing value (None, NaN of any float type, pandas' NA)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def intervals_overlap(low_a: float, high_a: float, low_b: float, high_b: float) -> bool:
    """Whether [low_a, high_a] and [low_b, high_b] share a point. A missing bound (None / NaN) is
    unbounded on that side, so a number without an interval is never called different."""
    def bound(value, default):
        number = _number(value)
        return default if math.isnan(number) else number

    return bound(low_a, -math.inf) <= bound(high_b, math.inf) and bound(low_b, -math.inf) <= bound(high_a, math.inf)


def _floats(values) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.float64)
    except TypeError:  # a missing value numpy cannot convert (pandas' NA)
        return np.asarray([_number(v) for v in values], dtype=np.float64)


def _arrays(values, lows, highs):
    v, lo, hi = _floats(values), _floats(lows), _floats(highs)
    if not v.shape == lo.shape == hi.shape or v.ndim != 1:
        raise ValueError(f"values, lows and highs must be 1-D of one length: {v.shape}, {lo.shape}, {hi.shape}")
    return v, np.where(np.isnan(lo), -np.inf, lo), np.where(np.isnan(hi), np.inf, hi)


def not_clearly_worse(values, lows, highs, lower_is_better: bool) -> np.ndarray:
    """Boolean per row: its interval overlaps the interval of the best row (the best value; rows
    without a value are False). Overlap of two 95% intervals is a conservative test of a
    difference (about the 99.5% level for equal widths), so a row marked False is clearly worse."""
    v, lo, hi = _arrays(values, lows, highs)
    out = np.zeros(v.shape, dtype=bool)
    present = ~np.isnan(v)
    if not present.any():
        return out
    best = int(np.nanargmin(v) if lower_is_better else np.nanargmax(v))
    out[present] = (lo[present] <= hi[best]) & (lo[best] <= hi[present])
    return out


def shared_ranks(values, lows, highs, lower_is_better: bool) -> np.ndarray:
    """Ranks (1 = best) that only separate rows whose intervals do: a row whose interval overlaps
    the best row's is ranked 1 (exactly the rows `not_clearly_worse`); any other row is ranked
    1 + the number of rows clearly better than it (their interval lies wholly on the better
    side of its own). So below rank 1 a rank is never shared with a clearly better row (whatever
    is clearly better than that row is clearly better than this one too, and so is that row);
    rank 1 can hold two rows that differ from each other when the best's interval is wide. Rows
    without a value get 0; a row without an interval is never clearly better or worse."""
    v, lo, hi = _arrays(values, lows, highs)
    ranks = np.zeros(v.shape, dtype=np.int64)
    present = np.flatnonzero(~np.isnan(v))
    if present.size == 0:
        return ranks
    first = not_clearly_worse(v, lo, hi, lower_is_better)
    # better[x, r]: row x's interval lies wholly on the better side of row r's
    better = hi[present][:, None] < lo[present][None, :] if lower_is_better else (
        lo[present][:, None] > hi[present][None, :])
    ranks[present] = np.where(first[present], 1, 1 + better.sum(axis=0))
    return ranks
