"""Conditional samples of a trained model during and after training: the class grid logged to
MLflow and the class accuracy of samples under the evaluation classifier.

Both go through generation's own path (pipeline.generation.generate) with the unguided trial
(w = 0: the plain conditional model), DDIM (Song et al., 2021, eq. 12, eta = 0) on `steps`
timesteps respaced exactly as the `sample` stage and the sweep respace them, so "DDIM 50" means
one timestep set everywhere. Image i and its label are functions of (seed, i) only, so the grid
of the same weights is the same picture every time.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from pipeline.generation.generate import generate
from pipeline.generation.grid import class_rows, grid_image, png_bytes, upscale
from pipeline.generation.models import Models
from pipeline.generation.sampler_config import SamplerConfig
from pipeline.weights import DiffusionModel, load_diffusion, load_evalnet, load_guide


def unguided_config(steps: int = 50, seed: int = 0, net_batch: int = 64) -> SamplerConfig:
    """The sampler configuration of training's samples: unguided DDIM, eta = 0, balanced classes."""
    return SamplerConfig(guidance="none", strength=0.0, sampler="ddim", steps=steps, eta=0.0, class_dist="balanced",
                         seed=seed, net_batch=net_batch)


def conditional_samples(model: DiffusionModel, num_images: int, steps: int = 50, seed: int = 0,
                        batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 NHWC images, int64 labels) of images 0..num_images-1 of the unguided trial. The
    network sees one batch per call (no padding to generation's fixed call shape: these few
    images are a preview, and the training driver makes them on CPU)."""
    batch_size = min(batch_size, num_images)
    return generate(unguided_config(steps, seed, net_batch=batch_size), Models(main=model), range(num_images),
                    batch_size)


def grid_png(images: np.ndarray, rows: int, scale: int = 4, pad: int = 1) -> bytes:
    """A PNG of uint8 NHWC `images` laid out row-major in `rows` rows, each image upscaled
    `scale` times (nearest), `pad` black pixels between cells."""
    return png_bytes(grid_image(upscale(images, scale), columns=-(-len(images) // rows), pad=pad))


def class_grid_png(model: DiffusionModel, per_class: int, steps: int = 50, seed: int = 0) -> bytes:
    """The class grid: row c holds `per_class` samples of class c."""
    num_classes = model.num_classes
    images, labels = conditional_samples(model, num_classes * per_class, steps, seed)
    return grid_png(class_rows(images, labels, per_class, num_classes), rows=num_classes)


@torch.no_grad()
def sample_class_accuracy(model: DiffusionModel, evalnet, num_images: int = 200, steps: int = 50,
                          seed: int = 0, batch_size: int = 500) -> tuple[float, np.ndarray]:
    """The fraction of `num_images` class-balanced conditional samples (w = 0, DDIM `steps`)
    that the evaluation classifier assigns to their requested class, and the per-class rates."""
    images, labels = conditional_samples(model, num_images, steps, seed, batch_size)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    evalnet.eval()
    _, logits = evalnet(x)
    hits = (logits.argmax(dim=1).numpy() == labels)
    per_class = np.array([hits[labels == c].mean() for c in range(model.num_classes)])
    return float(hits.mean()), per_class


def main(argv=None) -> int:
    """`python -m pipeline.training.samples DIFFUSION_OUTPUT EVALNET_OUTPUT [--images N] [--steps S]`:
    the class accuracy of a train_diffusion output's EMA samples (w = 0, DDIM) under a
    train_evalnet output, as one JSON line (the guide too with --guide)."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.training.samples", description=main.__doc__)
    parser.add_argument("diffusion", help="a train_diffusion output directory (path or URI)")
    parser.add_argument("evalnet", help="a train_evalnet output directory (path or URI)")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--guide", action="store_true", help="also measure the autoguidance guide")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    evalnet = load_evalnet(args.evalnet)
    models = {"main": load_diffusion(args.diffusion)}
    if args.guide:
        models["guide"] = load_guide(args.diffusion)
    result = {"images": args.images, "steps": args.steps, "sampler": "ddim", "w": 0.0}
    for role, model in models.items():
        started = time.perf_counter()
        accuracy, per_class = sample_class_accuracy(model, evalnet, args.images, args.steps, args.seed)
        result[role] = {"class_accuracy": round(accuracy, 4), "per_class": [round(float(p), 3) for p in per_class],
                        "p_uncond": model.p_uncond, "nimg": model.meta.get("nimg"),
                        "seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
