"""Frechet distance between two Gaussians fitted to feature sets.

Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local
Nash Equilibrium" (FID): for X1 ~ N(mu1, S1) and X2 ~ N(mu2, S2)

    d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2}).

Called FID only when the features are clean-fid's Inception features; in any other
feature space the number is a Frechet distance named for that space (e.g. fd_evalnet).
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg

__all__ = ["frechet_distance", "ImaginaryComponentError"]


class ImaginaryComponentError(ValueError):
    """sqrtm(S1 S2) has a non-negligible imaginary part: the covariances are not valid."""


def frechet_distance(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    eps: float = 1e-6,
    imag_atol: float = 1e-3,
) -> float:
    """Squared Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

    Numerics: everything is float64. When S1 S2 is (nearly) singular and scipy's sqrtm
    returns non-finite values, eps * I is added to both covariances and the root is taken
    again. Round-off can leave a small imaginary part in the root; it is dropped when the
    diagonal's imaginary part is below `imag_atol`, otherwise ImaginaryComponentError.
    """
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape:
        raise ValueError(f"mean vectors differ in shape: {mu1.shape} vs {mu2.shape}")
    if sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0],) * 2:
        raise ValueError(
            f"covariances {sigma1.shape}, {sigma2.shape} do not match means of size {mu1.shape[0]}")

    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        warnings.warn(f"frechet_distance: S1 S2 is singular; adding {eps} to the covariance diagonals",
                      RuntimeWarning, stacklevel=2)
        offset = eps * np.eye(sigma1.shape[0])
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
        if not np.isfinite(covmean).all():
            raise FloatingPointError("sqrtm of the covariance product is not finite even with eps offset")

    if np.iscomplexobj(covmean):
        worst = float(np.max(np.abs(np.diagonal(covmean).imag)))
        if worst > imag_atol:
            raise ImaginaryComponentError(
                f"sqrtm(S1 S2) has an imaginary diagonal component of {worst:.3g} (> {imag_atol})")
        covmean = covmean.real

    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean)
    return float(value)
