"""Conditional samples of a trained model during and after training: the class grid logged to
MLflow and the class accuracy of samples under the evaluation classifier.

Sampling is DDIM (Song et al., 2021, eq. 12, eta = 0) on the training schedule respaced to
`steps` ("ddimN" strides, Improved DDPM section 4), unguided (w = 0: the plain conditional
model). Image i is drawn from a generator seeded by (seed, i) (pipeline.diffusion.seeding), so
the grid of the same weights is the same picture every time.
"""
from __future__ import annotations

import numpy as np
import torch

from pipeline.diffusion.denoiser import NetworkDenoiser
from pipeline.diffusion.samplers import sample_ddim
from pipeline.diffusion.schedules import Schedule, respaced
from pipeline.diffusion.seeding import trial_noise
from pipeline.generation.generate import to_uint8


def respace_for_sampling(schedule: Schedule, steps: int) -> Schedule:
    try:
        return respaced(schedule, f"ddim{steps}")
    except ValueError:  # no integer stride gives exactly `steps`: evenly spaced instead
        return respaced(schedule, steps)


@torch.no_grad()
def conditional_samples(net, schedule: Schedule, labels: torch.Tensor, steps: int = 50, seed: int = 0,
                        batch_size: int = 500, first_index: int = 0) -> np.ndarray:
    """uint8 NHWC samples of `net` (a class-conditional UNet, eval mode) for `labels`, w = 0."""
    net.eval()
    sampling = respace_for_sampling(schedule, steps)
    denoiser = NetworkDenoiser(net, learned_sigma=bool(getattr(net, "learn_sigma", False)))
    shape = (net.in_channels, net.image_size, net.image_size)
    device = next(net.parameters()).device
    out = []
    for start in range(0, len(labels), batch_size):
        indices = range(first_index + start, first_index + min(start + batch_size, len(labels)))
        x_T, generators = trial_noise(seed, indices, shape, device=device)
        batch_labels = labels[start:start + batch_size].to(device)
        x0 = sample_ddim(denoiser, x_T, sampling, batch_labels, generators=generators, eta=0.0)
        out.append(to_uint8(x0))
    return np.concatenate(out)


def grid_labels(num_classes: int, per_class: int) -> torch.Tensor:
    """Row c of the grid is class c."""
    return torch.arange(num_classes).repeat_interleave(per_class)


def grid_png(images: np.ndarray, rows: int, scale: int = 4, pad: int = 1) -> bytes:
    """A PNG of uint8 NHWC `images` laid out row-major in `rows` rows, each image upscaled
    `scale` times (nearest), `pad` black pixels between cells."""
    from pipeline.generation.grid import grid_image, png_bytes, upscale

    return png_bytes(grid_image(upscale(images, scale), columns=-(-len(images) // rows), pad=pad))


@torch.no_grad()
def sample_class_accuracy(net, schedule: Schedule, evalnet, num_images: int = 200, steps: int = 50,
                          seed: int = 0, batch_size: int = 500) -> tuple[float, np.ndarray]:
    """The fraction of `num_images` class-balanced conditional samples (w = 0, DDIM `steps`)
    that the evaluation classifier assigns to their requested class, and the per-class rates."""
    num_classes = int(net.num_classes)
    labels = torch.arange(num_images) % num_classes
    images = conditional_samples(net, schedule, labels, steps, seed, batch_size)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    evalnet.eval()
    _, logits = evalnet(x)
    hits = (logits.argmax(dim=1) == labels).numpy()
    per_class = np.array([hits[labels.numpy() == c].mean() for c in range(num_classes)])
    return float(hits.mean()), per_class


def main(argv=None) -> int:
    """`python -m pipeline.training.samples DIFFUSION_OUTPUT EVALNET_OUTPUT [--images N] [--steps S]`:
    the class accuracy of a train_diffusion output's EMA samples (w = 0, DDIM) under a
    train_evalnet output, as one JSON line (the guide too with --guide)."""
    import argparse
    import json
    import os
    import time

    from pipeline.training.artifacts import load_diffusion, load_guide
    from pipeline.training.evalnet import load_evalnet

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
        accuracy, per_class = sample_class_accuracy(model.net, model.schedule, evalnet, args.images, args.steps,
                                                    args.seed)
        result[role] = {"class_accuracy": round(accuracy, 4), "per_class": [round(float(p), 3) for p in per_class],
                        "p_uncond": model.p_uncond, "nimg": model.meta.get("nimg"),
                        "seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
