"""The noisy classifier p_phi(y | x_t, t) of classifier guidance (Dhariwal & Nichol, 2021, section 4
and appendix): the UNet's encoder half (input blocks + middle block, timestep-conditioned by AdaGN,
no class input) followed by GroupNorm, SiLU and attention pooling to logits."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from pipeline.nets.layers import AttentionPool2d, group_norm, timestep_embedding
from pipeline.nets.unet import UNet, default_channel_mult, heads_for


class NoisyClassifier(nn.Module):
    """``forward(x_t, t) -> logits [B, num_classes]`` with t on the original timestep grid.

    Arguments match :class:`pipeline.nets.unet.UNet` (attention_resolutions in pixels). ADM's
    ImageNet classifiers: 128 channels, the UNet's mult per resolution, depth 2-4, attention at
    32/16/8 px, 64 channels per head, BigGAN downsampling, AdaGN.
    """

    def __init__(self, image_size: int, num_classes: int, in_channels: int = 3, base_channels: int = 128,
                 channel_mult: Optional[Sequence[float]] = None, num_res_blocks: int = 2,
                 attention_resolutions: Sequence[int] = (16,), num_heads: int = 4,
                 num_head_channels: Optional[int] = 64, dropout: float = 0.0, resblock_updown: bool = True,
                 use_scale_shift_norm: bool = True, norm_groups: int = 32):
        super().__init__()
        channel_mult = tuple(channel_mult) if channel_mult is not None else default_channel_mult(image_size)
        # Build an unconditional UNet and keep its encoder half; the decoder is dropped.
        unet = UNet(image_size, in_channels, base_channels, channel_mult, num_res_blocks, attention_resolutions,
                    num_heads, num_head_channels, dropout, num_classes=None, resblock_updown=resblock_updown,
                    use_scale_shift_norm=use_scale_shift_norm, norm_groups=norm_groups)
        self.base_channels, self.num_classes = base_channels, num_classes
        self.time_embed, self.input_blocks, self.middle_block = unet.time_embed, unet.input_blocks, unet.middle_block
        width = int(channel_mult[-1] * base_channels)
        self.head = nn.Sequential(group_norm(width, norm_groups), nn.SiLU())
        self.pool = AttentionPool2d(image_size // 2 ** (len(channel_mult) - 1), width,
                                    heads_for(width, num_heads, num_head_channels), num_classes)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        sinusoids = timestep_embedding(t, self.base_channels).to(self.time_embed[0].weight.dtype)
        emb = self.time_embed(sinusoids).to(x.dtype)
        h = x
        for block in self.input_blocks:
            h = block(h, emb)
        h = self.middle_block(h, emb)
        return self.pool(self.head(h))
