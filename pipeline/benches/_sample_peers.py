"""The sampling loops a user would write instead of ``pipeline.generation.generate``, for ``bench sample``.

Both run classifier-free-guided DDIM (eta = 0, x0 clipped to [-1, 1], eps recomputed from the
clipped x0, as ADM) on the same respaced schedule, under ``torch.no_grad`` (as diffusers'
pipelines and guided-diffusion's scripts do), on the network exactly as given:

- ``diffusers_ddim``: diffusers' ``DDIMScheduler`` with batched CFG (the conditional and
  unconditional rows in one forward of 2B, ``noise_pred = uncond + s (cond - uncond)``), the
  loop of diffusers' pipelines. A respaced schedule is handed to diffusers the way Improved
  DDPM / guided-diffusion respace (``SpacedDiffusion``): a chain of ``steps`` timesteps whose betas
  keep alpha_bar at the kept steps (``trained_betas``), the network called with the original
  timestep of each. (diffusers' own spacings cannot express it: its step takes
  ``alpha_bar[t - T // steps]``, which is not the previous kept step of an evenly spaced grid
  that includes both ends.)
- ``guided_diffusion_ddim``: guided-diffusion's ``ddim_sample`` (p_mean_variance, then eq. 12 of
  DDIM) with CFG as two separate forwards per step (conditional, unconditional).

Both return images in model space [-1, 1], float32, NCHW.
"""
from __future__ import annotations

from typing import Callable

import torch

from pipeline.diffusion.schedules import Schedule

# Function-local imports: they bring in diffusers, which importing this module does not need.


def _eps(net: Callable, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The first C output channels (eps; the rest is ADM's learned variance), as float32."""
    return net(x.to(dtype), t, labels)[:, : x.shape[1]].float()


def diffusers_ddim(net: Callable, schedule: Schedule, x_T: torch.Tensor, labels: torch.Tensor, null_label: int,
                   w: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """diffusers' DDIMScheduler loop with batched classifier-free guidance, scale s = 1 + w.
    ``dtype``: the network's dtype (bf16: a bf16 network, as ``torch_dtype=torch.bfloat16``
    loads it; the scheduler stays float32)."""
    from diffusers import DDIMScheduler

    steps = len(schedule)
    scheduler = DDIMScheduler(num_train_timesteps=steps, trained_betas=schedule.betas.tolist(), clip_sample=True,
                              set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading",
                              prediction_type="epsilon")
    scheduler.set_timesteps(steps)
    if scheduler.timesteps.tolist() != list(reversed(range(steps))):
        raise AssertionError(f"diffusers walks {scheduler.timesteps.tolist()}, not every step of the respaced chain")
    both_labels = torch.cat([labels, torch.full_like(labels, null_label)])
    x = x_T
    with torch.no_grad():
        for index in scheduler.timesteps:
            t = schedule.timesteps[int(index)].expand(2 * x.shape[0])
            conditional, unconditional = _eps(net, torch.cat([x, x]), t, both_labels, dtype).chunk(2)
            noise_pred = unconditional + (1 + w) * (conditional - unconditional)
            x = scheduler.step(noise_pred, index, x, eta=0.0, use_clipped_model_output=True).prev_sample
    return x


def guided_diffusion_ddim(net: Callable, schedule: Schedule, x_T: torch.Tensor, labels: torch.Tensor,
                          null_label: int, w: float) -> torch.Tensor:
    """guided-diffusion's DDIM loop (eta = 0) with classifier-free guidance as two forwards."""
    null = torch.full_like(labels, null_label)

    def table(name: str, index: int) -> torch.Tensor:  # _extract_into_tensor: float64 table -> float32
        return getattr(schedule, name)[index].float()

    x = x_T
    with torch.no_grad():
        for index in reversed(range(len(schedule))):
            t = schedule.timesteps[index].expand(x.shape[0])
            conditional = _eps(net, x, t, labels, torch.float32)
            unconditional = _eps(net, x, t, null, torch.float32)
            eps = unconditional + (1 + w) * (conditional - unconditional)
            recip, recipm1 = table("sqrt_recip_alphas_cumprod", index), table("sqrt_recipm1_alphas_cumprod", index)
            pred_x0 = (recip * x - recipm1 * eps).clamp(-1, 1)
            eps = (recip * x - pred_x0) / recipm1
            alpha_bar_prev = table("alphas_cumprod_prev", index)
            x = pred_x0 * alpha_bar_prev.sqrt() + (1 - alpha_bar_prev).sqrt() * eps
    return x
