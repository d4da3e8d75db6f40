"""Building blocks of the ADM UNet and noisy classifier (Dhariwal & Nichol, 2021, section 3).

- ResBlock: BigGAN-style residual block, optionally resampling inside the block (``up``/``down``),
  conditioned by AdaGN (section 3.1): AdaGN(h, y) = y_s GroupNorm(h) + y_b with
  [y_s, y_b] a linear projection of the time + class embedding (here y_s = 1 + scale).
- AttentionBlock: multi-head self-attention over spatial positions; ``perturb`` rows use the
  identity attention map, PSA(Q, K, V) = V (perturbed-attention guidance, Ahn et al., 2024, eq. 13).
- AttentionPool2d: the classifier head (CLIP-style attention pooling, ADM appendix).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, [B] -> [B, dim] (Transformer / DDPM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


def group_norm_input(x: torch.Tensor) -> torch.Tensor:
    """``x`` as GroupNorm should read it. PyTorch's CPU GroupNorm kernel for channels-last bf16/fp16
    input is 5-15x slower than its NCHW kernel on feature maps of 16 x 16 and below (measured with
    torch 2.14; 32 x 32 and larger are as fast or faster channels-last), which made GroupNorm the
    largest cost of bf16 sampling: those inputs are normalised from an NCHW copy (and the result
    goes back to channels-last, ``like``). The function is the same; only the kernel differs."""
    if (x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float16) and x.ndim == 4
            and x.shape[2] * x.shape[3] <= 256 and not x.is_contiguous()):
        return x.contiguous()
    return x


def like(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``out`` in ``x``'s memory format (channels-last stays channels-last through a GroupNorm)."""
    if x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return out.contiguous(memory_format=torch.channels_last)
    return out


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm reading its input through ``group_norm_input``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return like(super().forward(group_norm_input(x)), x)


def group_norm(channels: int, groups: int = 32) -> GroupNorm:
    """GroupNorm with ``groups`` groups, or the largest count dividing ``channels`` for tiny nets."""
    return GroupNorm(math.gcd(groups, channels), channels)


def zero_module(module: nn.Module) -> nn.Module:
    """ADM zero-initializes the last layer of each residual branch (the block starts as identity)."""
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


class Downsample(nn.Module):
    """Halve the resolution: strided 3x3 conv, or 2x2 average pooling when ``use_conv`` is False."""

    def __init__(self, channels: int, use_conv: bool, out_channels: Optional[int] = None):
        super().__init__()
        out_channels = out_channels or channels
        self.op = (nn.Conv2d(channels, out_channels, 3, stride=2, padding=1) if use_conv
                   else nn.AvgPool2d(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Double the resolution: nearest neighbour, followed by a 3x3 conv when ``use_conv``."""

    def __init__(self, channels: int, use_conv: bool, out_channels: Optional[int] = None):
        super().__init__()
        out_channels = out_channels or channels
        self.conv = nn.Conv2d(channels, out_channels, 3, padding=1) if use_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.conv is not None else x


class ResBlock(nn.Module):
    def __init__(self, channels: int, emb_channels: int, out_channels: Optional[int] = None, dropout: float = 0.0,
                 use_scale_shift_norm: bool = True, up: bool = False, down: bool = False, norm_groups: int = 32):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_norm = group_norm(channels, norm_groups)
        self.in_conv = nn.Conv2d(channels, out_channels, 3, padding=1)
        if up:
            self.resample_h, self.resample_x = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.resample_h, self.resample_x = Downsample(channels, False), Downsample(channels, False)
        else:
            self.resample_h = self.resample_x = None
        self.emb_proj = nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels)
        self.out_norm = group_norm(out_channels, norm_groups)
        self.dropout = nn.Dropout(dropout)
        self.out_conv = zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        inplace = not torch.is_grad_enabled()  # activations may overwrite their input when nothing is saved
        h = F.silu(self.in_norm(x), inplace=inplace)
        if self.resample_h is not None:
            h, x = self.resample_h(h), self.resample_x(x)
        h = self.in_conv(h)
        emb_out = self.emb_proj(F.silu(emb))[:, :, None, None]
        if self.use_scale_shift_norm:
            # AdaGN: GN(h) * (1 + scale) + shift, with GN's own affine folded into the per-(image, channel)
            # gain and bias so the whole feature map is touched once (one addcmul instead of 4 passes).
            scale, shift = emb_out.chunk(2, dim=1)
            norm = self.out_norm
            gain = 1 + scale
            bias = norm.bias[:, None, None] * gain + shift
            gain = norm.weight[:, None, None] * gain
            h = like(torch.addcmul(bias, F.group_norm(group_norm_input(h), norm.num_groups, eps=norm.eps), gain), h)
        else:
            h = self.out_norm(h + emb_out)
        h = self.out_conv(self.dropout(F.silu(h, inplace=inplace)))
        return self.skip(x) + h


def _split_heads(qkv: torch.Tensor, heads: int):
    """[B, L, 3C] -> q, k, v each [B, heads, L, C / heads] (ADM's "new" order: split qkv, then heads).
    The head dimension stays contiguous, which CPU/GPU fused attention kernels need."""
    b, length, three_c = qkv.shape
    head_dim = three_c // (3 * heads)
    q, k, v = qkv.view(b, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    return q, k, v


def _merge_heads(a: torch.Tensor) -> torch.Tensor:
    """[B, heads, L, d] -> [B, L, heads * d]."""
    b, heads, length, head_dim = a.shape
    return a.transpose(1, 2).reshape(b, length, heads * head_dim)


class AttentionBlock(nn.Module):
    """Residual self-attention over the H*W positions, softmax(Q K^T / sqrt(d)) V per head.

    Works token-major ([B, L, C], a free view of a channels-last feature map).
    ``perturb``: None/False (normal), True (every row), or a bool tensor [B]; perturbed rows use
    the identity map, so their attention output is V (perturbed-attention guidance)."""

    def __init__(self, channels: int, num_heads: int, norm_groups: int = 32):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"{channels} channels cannot be split into {num_heads} heads")
        self.num_heads = num_heads
        self.layer_name = ""  # set by the UNet: its module name, as perturbed-attention guidance selects layers
        self.norm = group_norm(channels, norm_groups)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj_out = zero_module(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor, perturb=None) -> torch.Tensor:
        b, c, *spatial = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)
        q, k, v = _split_heads(self.qkv(tokens), self.num_heads)
        if perturb is None or perturb is False:
            a = F.scaled_dot_product_attention(q, k, v)
        elif perturb is True or bool(perturb.all()):
            a = v
        else:
            # Attention over every row, then V on the perturbed ones: the kernel sees one shape
            # whatever the mix, so a row's output never depends on its batch (bf16 kernels do
            # depend on the batch size; see generation/batching.py).
            a = torch.where(perturb.view(-1, 1, 1, 1), v, F.scaled_dot_product_attention(q, k, v))
        # One memory layout whichever branch ran (V is a strided view of qkv): bf16 matmul
        # kernels round differently per layout, which would make a row depend on its batch's mix.
        out = self.proj_out(_merge_heads(a.contiguous()))  # [B, L, C]
        return x + out.transpose(1, 2).reshape(b, c, *spatial)


class AttentionPool2d(nn.Module):
    """Attention pooling (CLIP; ADM's classifier head): the mean token attends over all positions
    (with learned positional embeddings), then a projection to ``output_dim``."""

    def __init__(self, spatial_size: int, embed_dim: int, num_heads: int, output_dim: int):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(embed_dim, spatial_size ** 2 + 1) / embed_dim ** 0.5)
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim)
        self.proj = nn.Linear(embed_dim, output_dim)
        self.num_heads = num_heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        x = x.reshape(b, c, -1)
        x = torch.cat([x.mean(dim=-1, keepdim=True), x], dim=-1) + self.positional_embedding[None].to(x.dtype)
        q, k, v = _split_heads(self.qkv(x.transpose(1, 2)), self.num_heads)
        pooled = _merge_heads(F.scaled_dot_product_attention(q, k, v))  # [B, L + 1, C]
        return self.proj(pooled[:, 0])


class TimestepSequential(nn.Sequential):
    """A sequence of layers; ResBlocks get the embedding, attention blocks the PAG perturbation
    (those named in ``perturb_layers``; None: every one)."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor, perturb=None,
                perturb_layers: Optional[frozenset[str]] = None) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, AttentionBlock):
                chosen = perturb_layers is None or layer.layer_name in perturb_layers
                x = layer(x, perturb if chosen else None)
            else:
                x = layer(x)
        return x
