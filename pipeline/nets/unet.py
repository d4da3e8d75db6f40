"""The ADM UNet (Dhariwal & Nichol, 2021, section 3 and appendix), from 8 to 256 pixels.

Shape: an encoder of ``len(channel_mult)`` levels, each with ``num_res_blocks`` residual blocks
(width ``base_channels * mult``) and a downsampling step between levels (a BigGAN residual block
with ``resblock_updown``, else a strided conv); a middle ResBlock-Attention-ResBlock; a decoder
mirroring the encoder with skip connections. Self-attention follows the residual blocks at the
feature-map resolutions listed in ``attention_resolutions`` - given IN PIXELS of the feature map
(e.g. (32, 16, 8) for a 64 px model, as ADM's command-line flags), not as downsample factors.
Each attention layer has ``num_head_channels`` channels per head (ADM: 64) or, when that is
None, ``num_heads`` heads. Every residual block is conditioned by AdaGN on the sum of the
timestep embedding and, for a class-conditional model, a class embedding with one extra row:
the null token, index ``num_classes``, used for the unconditional branch of classifier-free
guidance. With ``learn_sigma`` the output has 2x channels: eps, then the raw variance
interpolation in [-1, 1] (Improved DDPM eq. 15).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from pipeline.arguments import ArgumentError
from pipeline.nets.layers import (AttentionBlock, Downsample, ResBlock, TimestepSequential, Upsample, group_norm,
                                  timestep_embedding, zero_module)


def default_channel_mult(image_size: int) -> tuple[float, ...]:
    """ADM's channel multipliers per resolution (Improved DDPM's for 32 px and below)."""
    table = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4),
             32: (1, 2, 2, 2), 16: (1, 2, 2), 8: (1, 2)}
    if image_size not in table:
        raise ValueError(f"no default channel_mult for {image_size} px; pass one explicitly")
    return table[image_size]


def heads_for(channels: int, num_heads: int, num_head_channels: Optional[int]) -> int:
    if num_head_channels:
        return channels // num_head_channels
    return num_heads


def validate_unet_config(image_size: int, base_channels: int, channel_mult: Sequence[float],
                         attention_resolutions: Sequence[int] = (), num_heads: int = 4,
                         num_head_channels: Optional[int] = None, num_res_blocks: int = 2) -> None:
    """Raise ArgumentError naming the argument at fault when the architecture cannot be built for
    ``image_size`` (config loading runs the same check on the `model` and `classifier` sections)."""
    for name, value in (("image_size", image_size), ("base_channels", base_channels),
                        ("num_res_blocks", num_res_blocks)):
        if value < 1:
            raise ArgumentError(name, value, "must be positive")
    if not channel_mult:
        raise ArgumentError("channel_mult", channel_mult, "`channel_mult` is empty: the network needs at least one level")
    factor = 2 ** (len(channel_mult) - 1)
    if image_size % factor:
        raise ArgumentError("image_size", image_size,
                            f"the network cannot take it: not divisible by 2**(len(`channel_mult`) - 1) = {factor} "
                            f"(`channel_mult` {list(channel_mult)} halves it {factor.bit_length() - 1} time(s))")
    level_resolutions = {image_size // 2 ** level: level for level in range(len(channel_mult))}
    for i, resolution in enumerate(attention_resolutions):
        if resolution not in level_resolutions:
            raise ArgumentError(f"attention_resolutions[{i}]", resolution,
                                f"attention resolution {resolution} px is not a resolution the network reaches "
                                f"from {image_size} px (reached: {sorted(level_resolutions, reverse=True)}; "
                                "`attention_resolutions` are given in pixels)")
    widths = [int(m * base_channels) for m in channel_mult]
    if min(widths) < 1:
        raise ArgumentError("channel_mult", channel_mult, "gives a level with no channels")
    attention_widths = sorted({widths[level_resolutions[r]] for r in attention_resolutions} | {widths[-1]})
    for width in attention_widths:
        if num_head_channels:
            if width % num_head_channels:
                raise ArgumentError("num_head_channels", num_head_channels,
                                    f"must divide the channels of every attention layer ({attention_widths}; "
                                    "the middle block always has one)")
        elif width % num_heads:
            raise ArgumentError("num_heads", num_heads, f"must divide the channels of every attention layer "
                                                        f"({attention_widths}; the middle block always has one)")


def attention_layer_names(image_size: int, channel_mult: Sequence[float], num_res_blocks: int,
                          attention_resolutions: Sequence[int], middle_attention: bool = True) -> list[str]:
    """The self-attention layers of the UNet these arguments build, in forward order, named as
    ADM's modules are (``input_blocks.14.1``, ``middle_block.1``, ``output_blocks.4.1``; the UNet's
    own ``attention_layers`` are these names). Computed without building the network, so a config
    naming layers can be checked when it is loaded."""
    names, index, resolution = [], 1, image_size  # input_blocks[0] is the first convolution
    for level in range(len(channel_mult)):
        for _ in range(num_res_blocks):
            if resolution in attention_resolutions:
                names.append(f"input_blocks.{index}.1")
            index += 1
        if level != len(channel_mult) - 1:
            index, resolution = index + 1, resolution // 2  # the downsampling block
    if middle_attention:
        names.append("middle_block.1")
    index = 0
    for level in reversed(range(len(channel_mult))):
        for i in range(num_res_blocks + 1):
            if resolution in attention_resolutions:
                names.append(f"output_blocks.{index}.1")
            index += 1
            if level and i == num_res_blocks:
                resolution *= 2
    return names


PAG_LAYER_CHOICES = ("paper", "all")


def pag_layers(attention_layers: Sequence[str], choice: str) -> frozenset[str]:
    """The self-attention layers perturbed-attention guidance perturbs, of a UNet whose layers are
    ``attention_layers`` (``attention_layer_names``). ``choice``:
    - "paper": the choice of Ahn et al. (2024) for ADM UNets. Their reference code perturbs
      input_blocks.14.1, 16.1, 17.1 and middle_block.1 of ADM ImageNet-256 (run/sample_*.sh,
      ``--drop_layers``): the last three self-attention layers of the encoder and the middle
      block's. "paper" takes the same positions in any ADM UNet.
    - "all": every self-attention layer;
    - "a,b,...": those layers by name.
    Raises ValueError naming an unknown layer and listing the known ones."""
    names = list(attention_layers)
    if choice == "all":
        return frozenset(names)
    if choice == "paper":
        encoder = [n for n in names if n.startswith("input_blocks.")]
        return frozenset(encoder[-3:] + [n for n in names if n.startswith("middle_block.")])
    chosen = [part.strip() for part in choice.split(",") if part.strip()]
    unknown = [n for n in chosen if n not in names]
    if unknown or not chosen:
        raise ValueError(f"{', '.join(unknown) or repr(choice)}: not a self-attention layer of this UNet "
                         f"(it has {', '.join(names) or 'none'}; or choose {' / '.join(PAG_LAYER_CHOICES)})")
    return frozenset(chosen)


class UNet(nn.Module):
    """ADM UNet. ``forward(x, t, labels=None, perturb_attention=None)`` -> [B, out_channels, H, W].

    Arguments (plain Python values, so a config section maps onto them):
      image_size: input resolution in pixels (8 ... 256; a power-of-two multiple per channel_mult)
      in_channels: image channels (3 RGB, 1 grayscale)
      base_channels: width of the first level (ADM ImageNet-64: 192)
      channel_mult: width multiplier per level; level k works at image_size / 2**k
      num_res_blocks: residual blocks per level
      attention_resolutions: feature-map resolutions IN PIXELS that get self-attention
      num_heads / num_head_channels: attention heads, or channels per head (wins when set)
      dropout: in every residual block
      num_classes: None for an unconditional model; else labels in [0, num_classes], where
        num_classes is the null token (labels=None also selects it)
      learn_sigma: output 2 * in_channels channels (eps, raw variance)
      resblock_updown: BigGAN residual blocks for up/downsampling (else strided conv / nearest+conv)
      use_scale_shift_norm: AdaGN (else the embedding is added before the norm)
      middle_attention: self-attention in the middle block (ADM: always)
      norm_groups: GroupNorm groups (ADM: 32; tiny widths use the largest divisor)
    ``perturb_attention``: True or a bool tensor [B] - those rows run the self-attention layers
    named in ``perturb_layers`` (None: every one; ``attention_layers`` lists them) with the identity
    map (attention output = V), for perturbed-attention guidance.
    """

    def __init__(self, image_size: int, in_channels: int = 3, base_channels: int = 128,
                 channel_mult: Optional[Sequence[float]] = None, num_res_blocks: int = 2,
                 attention_resolutions: Sequence[int] = (16,), num_heads: int = 4,
                 num_head_channels: Optional[int] = None, dropout: float = 0.0, num_classes: Optional[int] = None,
                 learn_sigma: bool = False, resblock_updown: bool = False, use_scale_shift_norm: bool = True,
                 middle_attention: bool = True, norm_groups: int = 32):
        super().__init__()
        channel_mult = tuple(channel_mult) if channel_mult is not None else default_channel_mult(image_size)
        validate_unet_config(image_size, base_channels, channel_mult, attention_resolutions, num_heads,
                             num_head_channels, num_res_blocks)
        self.image_size, self.in_channels, self.num_classes = image_size, in_channels, num_classes
        self.learn_sigma = learn_sigma
        self.out_channels = in_channels * (2 if learn_sigma else 1)
        self.base_channels = base_channels
        emb_dim = 4 * base_channels
        self.time_embed = nn.Sequential(nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_embed = nn.Embedding(num_classes + 1, emb_dim) if num_classes is not None else None

        def res(ch_in, ch_out, up=False, down=False):
            return ResBlock(ch_in, emb_dim, ch_out, dropout, use_scale_shift_norm, up=up, down=down,
                            norm_groups=norm_groups)

        def attention(ch):
            return AttentionBlock(ch, heads_for(ch, num_heads, num_head_channels), norm_groups)

        attention_resolutions = set(attention_resolutions)
        ch = int(channel_mult[0] * base_channels)
        first_ch = ch
        self.input_blocks = nn.ModuleList([TimestepSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        skip_channels = [ch]
        resolution = image_size
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [res(ch, int(mult * base_channels))]
                ch = int(mult * base_channels)
                if resolution in attention_resolutions:
                    layers.append(attention(ch))
                self.input_blocks.append(TimestepSequential(*layers))
                skip_channels.append(ch)
            if level != len(channel_mult) - 1:
                down = res(ch, ch, down=True) if resblock_updown else Downsample(ch, use_conv=True)
                self.input_blocks.append(TimestepSequential(down))
                skip_channels.append(ch)
                resolution //= 2

        middle = [res(ch, ch)] + ([attention(ch)] if middle_attention else []) + [res(ch, ch)]
        self.middle_block = TimestepSequential(*middle)

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [res(ch + skip_channels.pop(), int(mult * base_channels))]
                ch = int(mult * base_channels)
                if resolution in attention_resolutions:
                    layers.append(attention(ch))
                if level and i == num_res_blocks:
                    layers.append(res(ch, ch, up=True) if resblock_updown else Upsample(ch, use_conv=True))
                    resolution *= 2
                self.output_blocks.append(TimestepSequential(*layers))

        self.out = nn.Sequential(group_norm(first_ch, norm_groups), nn.SiLU(),
                                 zero_module(nn.Conv2d(first_ch, self.out_channels, 3, padding=1)))
        self.attention_layers = []
        for name, module in self.named_modules():
            if isinstance(module, AttentionBlock):
                module.layer_name = name
                self.attention_layers.append(name)

    @property
    def null_label(self) -> Optional[int]:
        return self.num_classes

    def embed(self, t: torch.Tensor, labels: Optional[torch.Tensor]) -> torch.Tensor:
        emb = self.time_embed(timestep_embedding(t, self.base_channels).to(self.time_embed[0].weight.dtype))
        if self.label_embed is not None:
            if labels is None:
                labels = torch.full_like(t, self.num_classes, dtype=torch.long)
            emb = emb + self.label_embed(labels.long())
        elif labels is not None:
            raise ValueError("this UNet is unconditional (num_classes=None) but labels were given")
        return emb

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: Optional[torch.Tensor] = None,
                perturb_attention=None, perturb_layers: Optional[frozenset[str]] = None) -> torch.Tensor:
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        emb = self.embed(t, labels).to(x.dtype)
        skips = []
        h = x
        for block in self.input_blocks:
            h = block(h, emb, perturb_attention, perturb_layers)
            skips.append(h)
        h = self.middle_block(h, emb, perturb_attention, perturb_layers)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, perturb_attention, perturb_layers)
        return self.out(h)


def adm_imagenet64_config(num_classes: int = 1000) -> dict:
    """ADM's class-conditional ImageNet 64x64 model (Dhariwal & Nichol 2021, Table 14 / released
    flags): 192 channels, mult (1, 2, 3, 4), 3 res blocks, attention at 32, 16 and 8 px with 64
    channels per head, BigGAN up/down, AdaGN, dropout 0.1, learned sigma. ~296M parameters."""
    return dict(image_size=64, in_channels=3, base_channels=192, channel_mult=(1, 2, 3, 4), num_res_blocks=3,
                attention_resolutions=(32, 16, 8), num_head_channels=64, dropout=0.1, num_classes=num_classes,
                learn_sigma=True, resblock_updown=True, use_scale_shift_norm=True)

