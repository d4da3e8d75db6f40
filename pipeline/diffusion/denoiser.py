"""What a sampler calls: the denoiser protocol.

A *denoiser* is any callable ``denoiser(x_t, t, labels) -> DenoiserOutput | Tensor`` where
- ``x_t`` is the noisy batch [B, ...],
- ``t`` is a LongTensor [B] of timesteps on the ORIGINAL training grid (e.g. 0..999), even when
  the sampler runs a respaced schedule,
- ``labels`` is a LongTensor [B] of class indices (the null label, index ``num_classes`` of the
  UNet, selects the unconditional branch) or None for an unconditional model.
A plain tensor return means "this is epsilon, the variance is fixed". Guidance wrappers
(``pipeline.diffusion.guidance``) are denoisers too, so any sampler takes any of them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Optional

import torch

from pipeline.diffusion.forward import raw_to_variance_fraction


@dataclass
class DenoiserOutput:
    """``eps``: predicted noise. ``var_frac``: the learned-variance interpolation v in [0, 1]
    (Improved DDPM eq. 15), None for a fixed variance. ``classifier_grad``: s * grad_x log p(y|x_t)
    from classifier guidance, left for the sampler to apply in its own form (ADM: DDPM shifts the
    mean by Sigma * g, DDIM shifts eps by -sqrt(1 - alpha_bar) * g)."""

    eps: torch.Tensor
    var_frac: Optional[torch.Tensor] = None
    classifier_grad: Optional[torch.Tensor] = None

    def with_eps(self, eps: torch.Tensor) -> "DenoiserOutput":
        return replace(self, eps=eps)


Denoiser = Callable[..., "DenoiserOutput | torch.Tensor"]


def as_output(out) -> DenoiserOutput:
    return out if isinstance(out, DenoiserOutput) else DenoiserOutput(eps=out)


class NetworkDenoiser:
    """Adapts a network ``net(x, t, labels, **kwargs) -> Tensor`` to the denoiser protocol.

    With ``learned_sigma`` the network emits 2C channels: eps, then raw variance values in
    [-1, 1] (ADM's convention, v = (raw + 1) / 2). Extra keyword arguments (for instance
    ``perturb_attention`` for perturbed-attention guidance) are passed through to the network.

    With ``autocast_dtype`` (torch.bfloat16) the network runs under ``torch.autocast`` (matmuls
    and convolutions in that dtype: AMX / tensor cores) and its output is cast back to float32,
    so the guidance combination and the sampler's update stay in float32.
    """

    def __init__(self, net: Callable[..., torch.Tensor], learned_sigma: bool = False,
                 autocast_dtype: Optional[torch.dtype] = None):
        self.net = net
        self.learned_sigma = learned_sigma
        self.autocast_dtype = autocast_dtype

    def __call__(self, x: torch.Tensor, t: torch.Tensor, labels: Optional[torch.Tensor] = None,
                 **kwargs) -> DenoiserOutput:
        if self.autocast_dtype is None:
            out = self.net(x, t, labels, **kwargs)
        else:
            with torch.autocast(x.device.type, dtype=self.autocast_dtype):
                out = self.net(x, t, labels, **kwargs)
            out = out.float()
        if not self.learned_sigma:
            return DenoiserOutput(eps=out)
        eps, raw = out.chunk(2, dim=1)
        return DenoiserOutput(eps=eps, var_frac=raw_to_variance_fraction(raw))
