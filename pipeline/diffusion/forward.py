"""The forward (noising) process and its Gaussian posterior.

``t`` here is an index into ``schedule`` (a LongTensor [B]); for an unrespaced schedule that is
the training timestep itself.

References (DDPM, Ho et al. 2020; Improved DDPM, Nichol & Dhariwal 2021)
- eq. 4:  q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)
- eq. 6-7: q(x_{t-1} | x_t, x_0) = N(mu~_t, beta~_t I),
  mu~_t = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x_0
          + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t,
  beta~_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t
- eq. 9 inverted: x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)
- Improved DDPM eq. 15: Sigma_theta = exp(v log beta_t + (1 - v) log beta~_t)
"""

from __future__ import annotations

import torch

from pipeline.diffusion.schedules import Schedule


def q_sample(schedule: Schedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Draw x_t ~ q(x_t | x_0) given the standard normal ``noise`` (DDPM eq. 4)."""
    return (schedule.gather("sqrt_alphas_cumprod", t, x0) * x0
            + schedule.gather("sqrt_one_minus_alphas_cumprod", t, x0) * noise)


def q_posterior(schedule: Schedule, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
    """Mean, variance and clipped log variance of q(x_{t-1} | x_t, x_0) (DDPM eq. 6-7)."""
    mean = (schedule.gather("posterior_mean_coef1", t, x_t) * x0
            + schedule.gather("posterior_mean_coef2", t, x_t) * x_t)
    variance = schedule.gather("posterior_variance", t, x_t)
    log_variance = schedule.gather("posterior_log_variance_clipped", t, x_t)
    return mean, variance, log_variance


def predict_x0_from_eps(schedule: Schedule, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """x_0 = x_t / sqrt(alpha_bar_t) - sqrt(1 / alpha_bar_t - 1) eps (DDPM eq. 9 inverted)."""
    return (schedule.gather("sqrt_recip_alphas_cumprod", t, x_t) * x_t
            - schedule.gather("sqrt_recipm1_alphas_cumprod", t, x_t) * eps)


def predict_eps_from_x0(schedule: Schedule, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """The epsilon that maps x_0 to x_t (inverse of :func:`predict_x0_from_eps`)."""
    return ((schedule.gather("sqrt_recip_alphas_cumprod", t, x_t) * x_t - x0)
            / schedule.gather("sqrt_recipm1_alphas_cumprod", t, x_t))


def learned_log_variance(schedule: Schedule, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """log Sigma = v log beta_t + (1 - v) log beta~_t (Improved DDPM eq. 15).

    ``v`` is the interpolation fraction; ADM's network emits raw values in [-1, 1] mapped by
    v = (raw + 1) / 2 (see :func:`raw_to_variance_fraction`)."""
    max_log = schedule.gather("betas", t, v).log()
    min_log = schedule.gather("posterior_log_variance_clipped", t, v)
    return v * max_log + (1.0 - v) * min_log


def raw_to_variance_fraction(raw: torch.Tensor) -> torch.Tensor:
    """ADM's convention: the network's variance channels in [-1, 1] -> v in [0, 1]."""
    return (raw + 1.0) / 2.0


def fixed_log_variance(schedule: Schedule, t: torch.Tensor, like: torch.Tensor, kind: str = "large") -> torch.Tensor:
    """DDPM's two fixed choices: "large" sigma^2 = beta_t (with beta~_1 at the first step, so the
    final step adds little noise, as ADM) or "small" sigma^2 = beta~_t (clipped at t = 0)."""
    if kind == "small":
        return schedule.gather("posterior_log_variance_clipped", t, like)
    if kind == "large":
        return schedule.gather("log_betas_large", t, like)
    raise ValueError(f"fixed variance must be 'large' or 'small', got {kind!r}")
