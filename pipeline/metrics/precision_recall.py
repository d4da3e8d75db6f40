"""Improved precision and recall (Kynkaanniemi et al. 2019).

Each feature set approximates its manifold by the union of balls around its points, the
radius of a point being the distance to its k-th nearest neighbour within its own set
(k = 3 in the paper). Then

    precision = fraction of fake points inside the real manifold
                (within the radius of at least one real point),
    recall    = fraction of real points inside the fake manifold.

Distances are computed in row blocks with torch.cdist so memory stays bounded.

For intervals (pipeline.metrics.intervals), `precision_recall_details` also returns the number of
fake points inside the real manifold (precision is a proportion of independent fake points, given
the real set) and the recall with each group of fake points left out (the delete-a-group
jackknife): a fake point's radius without group g is its k-th nearest neighbour outside g,
read from its `LEAVE_OUT_NEIGHBOURS` nearest neighbours (exactly recomputed in the rare case
that too many of them are in g).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

__all__ = ["knn_radii", "manifold_coverage", "precision_recall", "precision_recall_details", "PrecisionRecall"]

LEAVE_OUT_NEIGHBOURS = 16  # nearest neighbours kept per fake point for the leave-one-group-out radii


def _as_tensor(x, device, dtype) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(x), device=device, dtype=dtype)


def _block_rows(n_cols: int, itemsize: int, budget_bytes: int) -> int:
    return max(1, min(n_cols, budget_bytes // max(1, n_cols * itemsize)))


def knn_radii(features: torch.Tensor, k: int = 3, budget_bytes: int = 256 << 20) -> torch.Tensor:
    """Distance from every point to its k-th nearest neighbour in the same set (self excluded)."""
    n = features.shape[0]
    if n <= k:
        raise ValueError(f"need more than k={k} points to get k-NN radii, got {n}")
    rows = _block_rows(n, features.element_size(), budget_bytes)
    radii = torch.empty(n, dtype=features.dtype, device=features.device)
    for start in range(0, n, rows):
        d = torch.cdist(features[start:start + rows], features)
        # the point itself is at distance 0 and is the smallest: take the (k+1)-th
        radii[start:start + rows] = d.kthvalue(k + 1, dim=1).values
    return radii


def manifold_coverage(manifold: torch.Tensor, radii: torch.Tensor, queries: torch.Tensor,
                      budget_bytes: int = 256 << 20) -> torch.Tensor:
    """Boolean per query: within radii[j] of some manifold point j."""
    rows = _block_rows(manifold.shape[0], manifold.element_size(), budget_bytes)
    inside = torch.empty(queries.shape[0], dtype=torch.bool, device=queries.device)
    for start in range(0, queries.shape[0], rows):
        d = torch.cdist(queries[start:start + rows], manifold)
        inside[start:start + rows] = (d <= radii.unsqueeze(0)).any(dim=1)
    return inside


@dataclass
class PrecisionRecall:
    precision: float
    recall: float
    num_fake: int                 # fake points behind precision
    fake_inside: int              # of them inside the real manifold
    recall_without: Optional[np.ndarray] = None  # [G] recall with fake group g left out
    group_sizes: Optional[np.ndarray] = None     # [G] fake points per group


def _radii_without_groups(fake: torch.Tensor, groups: torch.Tensor, num_groups: int, k: int,
                          budget_bytes: int) -> torch.Tensor:
    """[G, n]: each fake point's k-NN radius among the fake points outside group g (-inf for the
    points of g, which are left out)."""
    n = fake.shape[0]
    keep = min(n - 1, max(LEAVE_OUT_NEIGHBOURS, k + 1))
    rows = _block_rows(n, fake.element_size(), budget_bytes)
    radii = torch.full((num_groups, n), float("-inf"), dtype=fake.dtype, device=fake.device)
    arange_g = torch.arange(num_groups, device=fake.device)
    for start in range(0, n, rows):
        d = torch.cdist(fake[start:start + rows], fake)
        own = torch.arange(start, start + d.shape[0], device=fake.device)
        d[torch.arange(d.shape[0], device=fake.device), own] = float("inf")  # never its own neighbour
        dist, nearest = d.topk(keep, dim=1, largest=False)                   # sorted ascending
        outside = groups[nearest].unsqueeze(0) != arange_g.view(-1, 1, 1)     # [G, b, keep]
        rank = outside.cumsum(dim=2)
        hit = outside & (rank == k)
        found = hit.any(dim=2)                                                # [G, b]
        value = torch.where(hit, dist.unsqueeze(0), torch.zeros_like(dist).unsqueeze(0)).sum(dim=2)
        for g, i in zip(*torch.nonzero(~found, as_tuple=True)):               # too many neighbours in g
            others = d[i][groups != g]
            value[g, i] = others.kthvalue(k).values if others.numel() >= k else float("inf")
        block = value.clone()
        block[groups[own].unsqueeze(0) == arange_g.view(-1, 1)] = float("-inf")
        radii[:, start:start + d.shape[0]] = block
    return radii


def precision_recall_details(real_features, fake_features, k: int = 3, fake_groups=None,
                             device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                             budget_bytes: int = 256 << 20) -> PrecisionRecall:
    """Precision and recall (as :func:`precision_recall`) with what their intervals need; with
    `fake_groups` (an int group per fake point) also the recall with each group left out."""
    real = _as_tensor(real_features, device, dtype)
    fake = _as_tensor(fake_features, device, dtype)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature sets must be (n, d) with the same d: {tuple(real.shape)}, {tuple(fake.shape)}")
    with torch.inference_mode():
        real_radii = knn_radii(real, k, budget_bytes)
        fake_radii = knn_radii(fake, k, budget_bytes)
        inside_real = manifold_coverage(real, real_radii, fake, budget_bytes)
        covered = manifold_coverage(fake, fake_radii, real, budget_bytes)
        result = PrecisionRecall(precision=inside_real.double().mean().item(), recall=covered.double().mean().item(),
                                 num_fake=int(fake.shape[0]), fake_inside=int(inside_real.sum()))
        if fake_groups is None:
            return result
        groups = torch.as_tensor(np.asarray(fake_groups), dtype=torch.long, device=fake.device)
        num_groups = int(groups.max()) + 1
        sizes = torch.bincount(groups, minlength=num_groups)
        radii = _radii_without_groups(fake, groups, num_groups, k, budget_bytes)
        hits = torch.zeros(num_groups, dtype=torch.long)
        rows = _block_rows(fake.shape[0], fake.element_size(), budget_bytes)
        for start in range(0, real.shape[0], rows):
            d = torch.cdist(real[start:start + rows], fake)
            for g in range(num_groups):
                hits[g] += int((d <= radii[g].unsqueeze(0)).any(dim=1).sum())
        result.recall_without = hits.double().numpy() / real.shape[0]
        result.group_sizes = sizes.cpu().numpy()
    return result


def precision_recall(
    real_features,
    fake_features,
    k: int = 3,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    budget_bytes: int = 256 << 20,
) -> tuple[float, float]:
    """(precision, recall) of fake_features against real_features with k-NN radii."""
    real = _as_tensor(real_features, device, dtype)
    fake = _as_tensor(fake_features, device, dtype)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature sets must be (n, d) with the same d: {tuple(real.shape)}, {tuple(fake.shape)}")
    with torch.inference_mode():
        real_radii = knn_radii(real, k, budget_bytes)
        fake_radii = knn_radii(fake, k, budget_bytes)
        precision = manifold_coverage(real, real_radii, fake, budget_bytes).double().mean().item()
        recall = manifold_coverage(fake, fake_radii, real, budget_bytes).double().mean().item()
    return float(precision), float(recall)
