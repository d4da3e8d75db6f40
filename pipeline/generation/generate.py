"""Images of a sampler configuration: the guided denoiser, the respaced sampler, per-image seeds.

Image i of a configuration is a function of (configuration, models, i) only: its initial noise
and every per-step noise come from its own generator seeded by (seed, i)
(pipeline.diffusion.seeding.trial_noise), its label from (seed, i) (labels.py), and every
network call has one fixed shape, ``config.net_batch`` rows (batching.FixedBatch). So any
``batch_size``, any split of the indices into chunks and any number of workers give identical
uint8 images.

Samplers: DDPM ancestral sampling (Ho et al., 2020, Algorithm 2; learned variance of Improved
DDPM when the model has it) or DDIM (Song et al., 2021, eq. 12) with ``eta``, both on
``steps`` evenly spaced timesteps of the training grid (Improved DDPM, section 4).
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional

import numpy as np
import torch

from pipeline.diffusion.denoiser import NetworkDenoiser
from pipeline.diffusion.guidance import ATTENTION, CLASSIFIER, GUIDE, UNCONDITIONAL, GuidanceParts
from pipeline.diffusion.samplers import SAMPLERS
from pipeline.diffusion.schedules import Schedule, respaced
from pipeline.diffusion.seeding import trial_noise
from pipeline.generation.batching import FixedBatch
from pipeline.generation.labels import labels_for
from pipeline.generation.models import Models
from pipeline.generation.sampler_config import SamplerConfig
from pipeline.nets.unet import pag_layers


def build_denoiser(config: SamplerConfig, models: Models):
    """The (guided) denoiser of ``config``: its guidance kind's wrapper (the registry,
    pipeline.diffusion.guidance.GUIDANCE) around the main model, given what the kind needs.
    The denoising networks run channels-last at the configuration's precision
    (pipeline.generation.inference); the classifier's gradient stays float32 NCHW."""
    kind, main = config.kind, models.main

    def plain(role):
        model = getattr(models, role)
        return NetworkDenoiser(FixedBatch(models.inference_net(role, config.precision), config.net_batch),
                               learned_sigma=model.learned_sigma)

    for need, model in ((GUIDE, models.guide), (CLASSIFIER, models.classifier)):
        if need in kind.needs and model is None:
            raise ValueError(f"{kind.name} guidance needs the {need} model "
                             f"(load_models loads it for this configuration)")
    parts = GuidanceParts(
        denoiser=plain("main"), null_label=main.null_label if UNCONDITIONAL in kind.needs else None,
        guide=plain("guide") if GUIDE in kind.needs else None,
        classifier=FixedBatch(models.classifier, config.net_batch) if CLASSIFIER in kind.needs else None,
        attention_layers=(pag_layers(main.net.attention_layers, config.pag_layers)
                          if ATTENTION in kind.needs and config.guided else None))
    return config.guided_denoiser(parts, main.schedule.num_train_timesteps)


def sampling_schedule(config: SamplerConfig, models: Models) -> Schedule:
    """The training schedule respaced to ``config.steps`` evenly spaced steps."""
    return respaced(models.main.schedule, config.steps)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Model space [-1, 1] NCHW -> uint8 NHWC (rounded to the nearest level)."""
    return ((x.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def generate(config: SamplerConfig, models: Models, indices: Iterable[int], batch_size: int,
             on_batch: Optional[Callable[[int], None]] = None) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [n, H, W, C], labels int64 [n]) of images ``indices`` of ``config``.

    ``batch_size`` images go through the sampler together; ``on_batch(n)`` is called after each
    batch of n images (progress)."""
    indices = [int(i) for i in indices]
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    main = models.main
    device = models.device
    denoiser = build_denoiser(config, models)
    schedule = sampling_schedule(config, models)
    sampler = SAMPLERS[config.sampler]
    options = {"eta": config.eta} if config.sampler == "ddim" else {}
    shape = (main.in_channels, main.image_size, main.image_size)
    images, labels = [], []
    for start in range(0, len(indices), batch_size):
        batch = indices[start:start + batch_size]
        x_T, generators = trial_noise(config.seed, batch, shape, device)
        y = labels_for(config, batch, main.num_classes).to(device)
        with torch.inference_mode():
            x0 = sampler(denoiser, x_T, schedule, y, generators=generators, **options)
        images.append(to_uint8(x0))
        labels.append(y.cpu().numpy().astype(np.int64))
        if on_batch is not None:
            on_batch(len(batch))
    if not images:
        return np.zeros((0, main.image_size, main.image_size, main.in_channels), np.uint8), np.zeros(0, np.int64)
    return np.concatenate(images), np.concatenate(labels)
