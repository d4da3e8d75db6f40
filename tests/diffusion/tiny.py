"""Tiny networks for fast tests: the zero-initialized output layers (ADM) get random weights so that
every input actually reaches the output."""

import torch

from pipeline.nets.unet import UNet


def randomize_(module: torch.nn.Module, seed: int = 0, std: float = 0.2) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if parameter.ndim > 1 or "bias" in name:
                fan_in = parameter[0].numel() if parameter.ndim > 1 else 1
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * std / fan_in ** 0.5 * 2)
    return module


def tiny_unet(image_size: int = 8, seed: int = 0, **overrides) -> UNet:
    config = dict(image_size=image_size, in_channels=3, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                  attention_resolutions=(image_size // 2,), num_head_channels=8, num_classes=4, resblock_updown=True)
    config.update(overrides)
    return randomize_(UNet(**config), seed).eval().requires_grad_(False)
