"""Tiny trained-model directories in the contract format (random weights), for the sampling
and scoring tests: a train_diffusion output (model + guide/), a train_classifier output, a
train_evalnet output, and reference statistics of random "real" images."""
from __future__ import annotations

import numpy as np
import pyarrow.fs as pafs
import pytest
import torch

from pipeline.store import Directory

NUM_CLASSES = 10
IMAGE_SIZE = 8
DIFFUSION = dict(timesteps=100, schedule="cosine", lambda_min=-20.0, lambda_max=20.0, loss="hybrid")
UNET = dict(image_size=IMAGE_SIZE, in_channels=3, base_channels=16, channel_mult=[1, 2], num_res_blocks=1,
            attention_resolutions=[4], num_head_channels=16, num_classes=NUM_CLASSES, learn_sigma=True,
            resblock_updown=True)
GUIDE_UNET = {**UNET, "base_channels": 8, "num_head_channels": 8}
CLASSIFIER = dict(image_size=IMAGE_SIZE, num_classes=NUM_CLASSES, base_channels=16, channel_mult=[1, 2],
                  num_res_blocks=1, attention_resolutions=[4], num_head_channels=16)
P_UNCOND = 0.1

torch.set_num_threads(1)  # the test machine's cores are shared; more threads only oversubscribe


def directory(path) -> Directory:
    path.mkdir(parents=True, exist_ok=True)
    return Directory(pafs.LocalFileSystem(), str(path), str(path))


def randomized(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Small random weights everywhere (ADM zero-initialises output layers: eps would be 0)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
    return module.eval()


def real_images(n: int = 64, seed: int = 123) -> tuple[np.ndarray, np.ndarray]:
    """Stand-in "real data": smooth uint8 images whose colour says their class, with labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, size=n).astype(np.int64)
    palette = np.random.default_rng(0).integers(30, 226, size=(NUM_CLASSES, 3))
    coarse = palette[labels][:, None, None, :] + rng.integers(-30, 31, size=(n, 2, 2, 3))
    images = np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2)
    return np.clip(images, 0, 255).astype(np.uint8), labels


def _training_setup(net: torch.nn.Module, seed: int):
    """What the two brief trainings share: a generator, ``real_images`` as model-space tensors,
    the schedule and an Adam optimiser; ``net`` is put in training mode."""
    from pipeline.weights import schedule_from

    images, labels = real_images(256, seed)
    x0_all = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    net.train()
    return (torch.Generator().manual_seed(seed), x0_all, torch.from_numpy(labels), schedule_from(DIFFUSION),
            torch.optim.Adam(net.parameters(), lr=3e-3))


def train_briefly(net: torch.nn.Module, steps: int, p_uncond: float = P_UNCOND, seed: int = 0) -> torch.nn.Module:
    """A few Adam steps of the hybrid loss on ``real_images``: enough that samples are not noise
    pinned to 0 / 255 (seconds on a CPU)."""
    from pipeline.diffusion.losses import diffusion_loss

    generator, x0_all, y_all, schedule, optimizer = _training_setup(net, seed)
    for _ in range(steps):
        pick = torch.randint(0, len(y_all), (32,), generator=generator)
        x0, y = x0_all[pick], y_all[pick].clone()
        y[torch.rand(32, generator=generator) < p_uncond] = NUM_CLASSES
        t = torch.randint(0, len(schedule), (32,), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        loss = diffusion_loss(net, schedule, x0, t, noise, y, learned_sigma=True)["loss"].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net.eval()


def train_classifier_briefly(net: torch.nn.Module, steps: int, seed: int = 0) -> torch.nn.Module:
    """A few Adam steps of cross-entropy on noised ``real_images`` (ADM's noisy classifier)."""
    from pipeline.diffusion.forward import q_sample

    generator, x0_all, y_all, schedule, optimizer = _training_setup(net, seed)
    for _ in range(steps):
        pick = torch.randint(0, len(y_all), (32,), generator=generator)
        t = torch.randint(0, len(schedule) // 2, (32,), generator=generator)
        x_t = q_sample(schedule, x0_all[pick], t, torch.randn(32, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator))
        loss = torch.nn.functional.cross_entropy(net(x_t, t), y_all[pick])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net.eval()


def write_diffusion(out: Directory, p_uncond: float = P_UNCOND, seed: int = 0) -> None:
    """A train_diffusion output: the main model and its autoguidance guide in guide/."""
    from pipeline.nets.unet import UNet
    from pipeline.weights import GUIDE_DIR, save_diffusion

    save_diffusion(out, train_briefly(UNet(**UNET), 60, p_uncond, seed).state_dict(), UNET, DIFFUSION,
                   p_uncond=p_uncond, nimg=60 * 32, role="main")
    guide = out.subdir(GUIDE_DIR)
    save_diffusion(guide, train_briefly(UNet(**GUIDE_UNET), 20, p_uncond, seed + 1).state_dict(), GUIDE_UNET,
                   DIFFUSION, p_uncond=p_uncond, nimg=20 * 32, role="guide")


def write_classifier(out: Directory, seed: int = 2) -> None:
    from pipeline.nets.classifier import NoisyClassifier
    from pipeline.weights import save_classifier

    save_classifier(out, train_classifier_briefly(NoisyClassifier(**CLASSIFIER), 30, seed).state_dict(),
                    CLASSIFIER, DIFFUSION, nimg=30 * 32)


def write_evalnet(out: Directory, seed: int = 3) -> None:
    """An untrained evaluation classifier (random features are a valid, if weak, feature space)."""
    from pipeline.weights import EvalnetArch, save_evalnet

    arch = EvalnetArch(in_channels=3, num_classes=NUM_CLASSES, width=8, blocks_per_stage=(1, 1))
    torch.manual_seed(seed)
    save_evalnet(out, arch.build().eval(), arch)


def save_tiny_models(root, p_uncond: float = P_UNCOND, seed: int = 0) -> dict[str, str]:
    """{"diffusion": dir, "classifier": dir, "evalnet": dir} under ``root``."""
    paths = {"diffusion": root / "train_diffusion", "classifier": root / "train_classifier",
             "evalnet": root / "train_evalnet"}
    write_diffusion(directory(paths["diffusion"]), p_uncond, seed)
    write_classifier(directory(paths["classifier"]), seed + 2)
    write_evalnet(directory(paths["evalnet"]), seed + 3)
    return {k: str(v) for k, v in paths.items()}


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, str]:
    return save_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def tiny_references(tiny_models, tmp_path_factory) -> str:
    """A reference_stats-shaped directory with evalnet statistics of ``real_images``."""
    from pipeline.generation.scoring import evalnet_extractor, write_references
    from pipeline.metrics import batches_from_arrays, compute_feature_stats

    images, labels = real_images()
    stats = compute_feature_stats([evalnet_extractor(tiny_models["evalnet"])], batches_from_arrays(images, labels, 16))
    root = tmp_path_factory.mktemp("reference")
    write_references(directory(root), stats)
    return str(root)
