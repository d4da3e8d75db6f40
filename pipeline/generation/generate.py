"""Images of a trial: the guided denoiser, the respaced sampler, per-image seeds.

Image i of a trial is a function of (trial, models, i) only: its initial noise and every
per-step noise come from its own generator seeded by (trial seed, i)
(pipeline.diffusion.seeding.trial_noise), its label from (trial seed, i) (labels.py), and
every network call has one fixed shape (batching.FixedBatch). So any ``batch_size``, any
split of the indices into chunks and any number of workers give identical uint8 images.

Samplers: DDPM ancestral sampling (Ho et al., 2020, Algorithm 2; learned variance of Improved
DDPM when the model has it) or DDIM (Song et al., 2021, eq. 12) with ``eta``, both on
``steps`` evenly spaced timesteps of the training grid (Improved DDPM, section 4).
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional

import numpy as np
import torch

from pipeline.diffusion.denoiser import NetworkDenoiser
from pipeline.diffusion.guidance import (AutoGuidance, ClassifierFreeGuidance, ClassifierGuidance,
                                         PerturbedAttentionGuidance)
from pipeline.diffusion.samplers import SAMPLERS
from pipeline.diffusion.schedules import Schedule, respaced
from pipeline.diffusion.seeding import trial_noise
from pipeline.generation.batching import FixedBatch
from pipeline.generation.labels import labels_for
from pipeline.generation.models import Models
from pipeline.generation.trial import SamplerTrial, interval_timesteps

NET_BATCH = 64  # rows of every network call (see batching.py); part of what fixes the images
# The classifier's gradient (classifier guidance) stays in float32 whatever the precision.
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def build_denoiser(trial: SamplerTrial, models: Models, net_batch: int = NET_BATCH):
    """The (guided) denoiser of ``trial``: a denoiser in the sense of pipeline.diffusion.denoiser."""
    main = models.main
    window = interval_timesteps(trial.interval, main.schedule.num_train_timesteps)
    autocast = AUTOCAST_DTYPES[trial.precision]
    plain = NetworkDenoiser(FixedBatch(main.net, net_batch), learned_sigma=main.learned_sigma, autocast_dtype=autocast)
    if trial.guidance == "none":
        return plain
    if trial.guidance == "cfg":
        return ClassifierFreeGuidance(plain, trial.w, main.null_label, interval=window)
    if trial.guidance == "pag":
        return PerturbedAttentionGuidance(plain, trial.w, interval=window)
    if trial.guidance == "autoguidance":
        if models.guide is None:
            raise ValueError("autoguidance needs the guide model (load_models loads it for this trial)")
        guide = NetworkDenoiser(FixedBatch(models.guide.net, net_batch), learned_sigma=models.guide.learned_sigma,
                                autocast_dtype=autocast)
        return AutoGuidance(plain, guide, trial.w, interval=window)
    if trial.guidance == "classifier":
        if models.classifier is None:
            raise ValueError("classifier guidance needs the noisy classifier (load_models loads it for this trial)")
        return ClassifierGuidance(plain, FixedBatch(models.classifier, net_batch), scale=trial.w, interval=window)
    raise ValueError(f"unknown guidance {trial.guidance!r}")


def sampling_schedule(trial: SamplerTrial, models: Models) -> Schedule:
    """The training schedule respaced to ``trial.steps`` evenly spaced steps."""
    return respaced(models.main.schedule, trial.steps)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Model space [-1, 1] NCHW -> uint8 NHWC (rounded to the nearest level)."""
    return ((x.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def generate(trial: SamplerTrial, models: Models, indices: Iterable[int], batch_size: int,
             net_batch: int = NET_BATCH, on_batch: Optional[Callable[[int], None]] = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [n, H, W, C], labels int64 [n]) of images ``indices`` of ``trial``.

    ``batch_size`` images go through the sampler together; ``on_batch(n)`` is called after each
    batch of n images (progress)."""
    indices = [int(i) for i in indices]
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    main = models.main
    device = models.device
    denoiser = build_denoiser(trial, models, net_batch)
    schedule = sampling_schedule(trial, models)
    sampler = SAMPLERS[trial.sampler]
    options = {"eta": trial.eta} if trial.sampler == "ddim" else {}
    shape = (main.in_channels, main.image_size, main.image_size)
    images, labels = [], []
    for start in range(0, len(indices), batch_size):
        batch = indices[start:start + batch_size]
        x_T, generators = trial_noise(trial.seed, batch, shape, device)
        y = labels_for(trial, batch, main.num_classes).to(device)
        with torch.inference_mode():
            x0 = sampler(denoiser, x_T, schedule, y, generators=generators, **options)
        images.append(to_uint8(x0))
        labels.append(y.cpu().numpy().astype(np.int64))
        if on_batch is not None:
            on_batch(len(batch))
    if not images:
        return np.zeros((0, main.image_size, main.image_size, main.in_channels), np.uint8), np.zeros(0, np.int64)
    return np.concatenate(images), np.concatenate(labels)
