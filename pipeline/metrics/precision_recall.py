"""Improved precision and recall (Kynkaanniemi et al. 2019).

Each feature set approximates its manifold by the union of balls around its points, the
radius of a point being the distance to its k-th nearest neighbour within its own set
(k = 3 in the paper). Then

    precision = fraction of fake points inside the real manifold
                (within the radius of at least one real point),
    recall    = fraction of real points inside the fake manifold.

Distances are computed in row blocks with torch.cdist so memory stays bounded.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["knn_radii", "manifold_coverage", "precision_recall"]


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
