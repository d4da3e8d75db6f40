"""Config sections -> constructor arguments of the three trained networks, in one room.

    unet_kwargs(cfg.model, ...)            the class-conditional ADM UNet (train_diffusion)
    classifier_kwargs(cfg.classifier, ...) the noisy classifier (train_classifier)
    evalnet_arch(cfg.evalnet, ...)         the evaluation classifier (train_evalnet)
    diffusion_dict(cfg.diffusion)          the noise-process settings a trained model depends on

Image size and class count come from the shard output, not the config. What is returned is
what the weights files record (pipeline.weights), so a loader rebuilds the same network.
"""
from __future__ import annotations

from typing import Any, Optional

from pipeline.training.evalnet import num_stages
from pipeline.weights import EvalnetArch

DIFFUSION_KEYS = ("timesteps", "schedule", "lambda_min", "lambda_max", "loss")


def _heads(num_head_channels: int) -> Optional[int]:
    """ADM's channels per attention head; -1 (or 0) in the config: count heads instead."""
    return num_head_channels if num_head_channels > 0 else None


def unet_kwargs(model, image_size: int, num_classes: int, base_channels: Optional[int] = None) -> dict[str, Any]:
    """UNet constructor arguments from the `model` config section (`base_channels` overrides the
    width, for the smaller autoguidance guide)."""
    return dict(image_size=image_size, in_channels=3, base_channels=base_channels or model.base_channels,
                channel_mult=tuple(model.channel_mult), num_res_blocks=model.num_res_blocks,
                attention_resolutions=tuple(model.attention_resolutions), num_heads=model.num_heads,
                num_head_channels=_heads(model.num_head_channels), dropout=model.dropout, num_classes=num_classes,
                learn_sigma=model.learn_sigma, resblock_updown=model.resblock_updown,
                use_scale_shift_norm=model.use_scale_shift_norm)


def classifier_kwargs(classifier, image_size: int, num_classes: int) -> dict[str, Any]:
    """NoisyClassifier constructor arguments from the `classifier` config section."""
    return dict(image_size=image_size, num_classes=num_classes, in_channels=3,
                base_channels=classifier.base_channels, channel_mult=tuple(classifier.channel_mult),
                num_res_blocks=classifier.num_res_blocks,
                attention_resolutions=tuple(classifier.attention_resolutions),
                num_head_channels=_heads(classifier.num_head_channels))


def evalnet_arch(evalnet, in_channels: int, num_classes: int) -> EvalnetArch:
    """evalnet.{width, depth, feature_dim}: feature_dim = width * 2**(stages - 1), depth blocks per stage."""
    stages = num_stages(evalnet.width, evalnet.feature_dim)
    return EvalnetArch(in_channels, num_classes, evalnet.width, (evalnet.depth,) * stages)


def diffusion_dict(diffusion) -> dict[str, Any]:
    """The parts of the `diffusion` config section a trained model depends on."""
    return {k: getattr(diffusion, k) for k in DIFFUSION_KEYS}
