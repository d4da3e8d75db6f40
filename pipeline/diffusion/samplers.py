"""Samplers: pure functions sharing one signature.

    sampler(denoiser, x_T, schedule, labels=None, *, generators=None, noise=None,
            callback=None, clip_x0=True, **sampler_options) -> x_0

- ``denoiser``: see ``pipeline.diffusion.denoiser`` (called with ORIGINAL-grid timesteps
  ``schedule.timesteps[i]``; guidance wrappers are denoisers too).
- ``x_T``: the initial noise [B, ...], explicit (see ``seeding.randn_per_image``).
- ``schedule``: a (usually respaced) :class:`Schedule`; its length is the number of steps.
- ``generators``: one CPU ``torch.Generator`` per image; step k draws each image's noise from its
  own generator, so image i never depends on the rest of the batch. Or ``noise``: an explicit
  tensor [len(schedule), B, ...] whose slice k is used at loop step k (k = 0 is the noisiest).
  Stochastic samplers need one of the two; giving both is an error.
- ``callback(info)``: called once per step with a dict: i (loop step), index (schedule index),
  t (original timesteps [B]), x (x_t before the step), pred_x0.
- ``clip_x0``: clip the predicted x_0 to [-1, 1] (ADM does so for images).

Nothing here switches on inference mode or no_grad: the caller picks it (classifier guidance
needs autograd for its gradient, and takes care of it inside the wrapper). The fast path
``generate`` runs (``pipeline/generation/inference.py``, measured by ``python -m pipeline.bench
sample``): ``torch.inference_mode()``, the network channels-last, bf16 as a bf16 copy.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from pipeline.diffusion.denoiser import Denoiser, as_output
from pipeline.diffusion.forward import (fixed_log_variance, learned_log_variance, predict_eps_from_x0,
                                        predict_x0_from_eps, q_posterior)
from pipeline.diffusion.schedules import Schedule
from pipeline.diffusion.seeding import randn_per_image

StepCallback = Callable[[dict], None]


class _StepNoise:
    """Per-step noise from per-image generators or from an explicit tensor."""

    def __init__(self, x_T: torch.Tensor, steps: int, generators: Optional[Sequence[torch.Generator]],
                 noise: Optional[torch.Tensor], needed: bool):
        if generators is not None and noise is not None:
            raise ValueError("give either per-image generators or an explicit noise tensor, not both")
        if needed and generators is None and noise is None:
            raise ValueError("this sampler is stochastic: pass per-image generators or a noise tensor")
        if generators is not None and len(generators) != x_T.shape[0]:
            raise ValueError(f"need one generator per image: {len(generators)} for a batch of {x_T.shape[0]}")
        if noise is not None and tuple(noise.shape) != (steps, *x_T.shape):
            raise ValueError(f"noise must have shape {(steps, *x_T.shape)}, got {tuple(noise.shape)}")
        self.x_T, self.generators, self.noise = x_T, generators, noise

    def __call__(self, step: int) -> torch.Tensor:
        if self.noise is not None:
            return self.noise[step].to(self.x_T.device, self.x_T.dtype)
        return randn_per_image(self.generators, self.x_T.shape[1:], self.x_T.device, self.x_T.dtype)


def _timestep_batch(schedule: Schedule, index: int, x: torch.Tensor):
    index_batch = torch.full((x.shape[0],), index, dtype=torch.long, device=x.device)
    original_t = schedule.timesteps.to(x.device)[index_batch]
    return index_batch, original_t


def _pred_x0(schedule, x, index_batch, eps, clip_x0):
    pred_x0 = predict_x0_from_eps(schedule, x, index_batch, eps)
    return pred_x0.clamp(-1.0, 1.0) if clip_x0 else pred_x0


def sample_ddpm(denoiser: Denoiser, x_T: torch.Tensor, schedule: Schedule, labels: Optional[torch.Tensor] = None, *,
                generators: Optional[Sequence[torch.Generator]] = None, noise: Optional[torch.Tensor] = None,
                callback: Optional[StepCallback] = None, clip_x0: bool = True,
                fixed_variance: str = "large") -> torch.Tensor:
    """Ancestral sampling x_{t-1} ~ N(mu_theta(x_t), Sigma) (DDPM Algorithm 2) on a respaced schedule.

    mu_theta is the posterior mean of q(x_{t-1} | x_t, x0_hat) with x0_hat from eps (DDPM eq. 11);
    Sigma is learned when the denoiser returns ``var_frac`` (Improved DDPM eq. 15), else the fixed
    ``fixed_variance`` ("large" = beta_t, "small" = beta~_t). Classifier guidance in the DDPM form:
    mu <- mu + Sigma * s * grad log p(y | x_t) (ADM, Algorithm 1), with Sigma the variance as
    guided-diffusion's ``p_sample``/``condition_mean`` use it: for "small" the unclipped beta~_t,
    which is 0 at the last step (no guidance there), while the noise uses the clipped log variance
    (and none is added at the last step anyway).
    """
    steps = len(schedule)
    draw = _StepNoise(x_T, steps, generators, noise, needed=steps > 1)
    x = x_T
    for step, index in enumerate(reversed(range(steps))):
        index_batch, t = _timestep_batch(schedule, index, x)
        out = as_output(denoiser(x, t, labels))
        pred_x0 = _pred_x0(schedule, x, index_batch, out.eps, clip_x0)
        mean, posterior_variance, _ = q_posterior(schedule, pred_x0, x, index_batch)
        if out.var_frac is not None:
            log_var = learned_log_variance(schedule, index_batch, out.var_frac)
        else:
            log_var = fixed_log_variance(schedule, index_batch, x, fixed_variance)
        if out.classifier_grad is not None:
            unclipped = out.var_frac is None and fixed_variance == "small"
            mean = mean + (posterior_variance if unclipped else log_var.exp()) * out.classifier_grad
        if callback is not None:
            callback({"i": step, "index": index, "t": t, "x": x, "pred_x0": pred_x0})
        if index > 0:
            x = mean + (0.5 * log_var).exp() * draw(step)
        else:
            x = mean
    return x


def sample_ddim(denoiser: Denoiser, x_T: torch.Tensor, schedule: Schedule, labels: Optional[torch.Tensor] = None, *,
                generators: Optional[Sequence[torch.Generator]] = None, noise: Optional[torch.Tensor] = None,
                callback: Optional[StepCallback] = None, clip_x0: bool = True, eta: float = 0.0) -> torch.Tensor:
    """DDIM (Song et al., 2021, eq. 12):
    x_{t-1} = sqrt(a_{t-1}) x0_hat + sqrt(1 - a_{t-1} - sigma_t^2) eps + sigma_t z,
    sigma_t = eta sqrt((1 - a_{t-1}) / (1 - a_t)) sqrt(1 - a_t / a_{t-1}), a = alpha_bar.
    eta = 0 is deterministic; eta = 1 matches DDPM's "small" variance.

    Classifier guidance in the DDIM form (ADM, Algorithm 2 / eq. 14), in guided-diffusion's order
    (``ddim_sample`` + ``condition_score``): x0_hat from eps, clipped; eps re-derived from the
    clipped x0_hat; eps <- eps - sqrt(1 - alpha_bar_t) * s * grad log p(y | x_t); x0_hat of the
    guided eps, NOT clipped again. (Guiding eps before clipping agrees only without clipping.)"""
    steps = len(schedule)
    draw = _StepNoise(x_T, steps, generators, noise, needed=eta > 0 and steps > 1)
    x = x_T
    for step, index in enumerate(reversed(range(steps))):
        index_batch, t = _timestep_batch(schedule, index, x)
        out = as_output(denoiser(x, t, labels))
        eps = out.eps
        pred_x0 = _pred_x0(schedule, x, index_batch, eps, clip_x0)
        if clip_x0:
            eps = predict_eps_from_x0(schedule, x, index_batch, pred_x0)
        if out.classifier_grad is not None:
            eps = eps - schedule.gather("sqrt_one_minus_alphas_cumprod", index_batch, x) * out.classifier_grad
            pred_x0 = predict_x0_from_eps(schedule, x, index_batch, eps)
        if callback is not None:
            callback({"i": step, "index": index, "t": t, "x": x, "pred_x0": pred_x0})
        alpha_bar = schedule.gather("alphas_cumprod", index_batch, x)
        alpha_bar_prev = schedule.gather("alphas_cumprod_prev", index_batch, x)
        sigma = eta * ((1 - alpha_bar_prev) / (1 - alpha_bar)).sqrt() * (1 - alpha_bar / alpha_bar_prev).sqrt()
        x = alpha_bar_prev.sqrt() * pred_x0 + (1 - alpha_bar_prev - sigma ** 2).clamp(min=0).sqrt() * eps
        if eta > 0 and index > 0:
            x = x + sigma * draw(step)
    return x


def ddim_invert(denoiser: Denoiser, x0: torch.Tensor, schedule: Schedule, labels: Optional[torch.Tensor] = None, *,
                callback: Optional[StepCallback] = None) -> torch.Tensor:
    """Deterministic DDIM encoding x_0 -> x_T: DDIM eq. 12 (eta = 0) run forward in time, the
    ODE discretization of DDIM section 4.3, with eps taken at the current (less noisy) point.
    ``sample_ddim(..., eta=0, clip_x0=False)`` on the result returns ``x0`` up to discretization
    error."""
    x = x0
    for index in range(len(schedule)):
        index_batch, _ = _timestep_batch(schedule, index, x)
        level = torch.full_like(index_batch, max(index - 1, 0))
        t = schedule.timesteps.to(x.device)[level]
        eps = as_output(denoiser(x, t, labels)).eps
        alpha_bar_here = schedule.gather("alphas_cumprod_prev", index_batch, x)
        alpha_bar_next = schedule.gather("alphas_cumprod", index_batch, x)
        pred_x0 = (x - (1 - alpha_bar_here).sqrt() * eps) / alpha_bar_here.sqrt()
        if callback is not None:
            callback({"i": index, "index": index, "t": t, "x": x, "pred_x0": pred_x0})
        x = alpha_bar_next.sqrt() * pred_x0 + (1 - alpha_bar_next).sqrt() * eps
    return x


SAMPLERS = {"ddpm": sample_ddpm, "ddim": sample_ddim}
