"""Per-image random streams: image i of a trial depends only on (trial seed, i).

Each image owns a CPU ``torch.Generator`` seeded from a hash of (trial_seed, image_index); its
initial noise and every per-step noise come from that generator alone, so the image does not
depend on batch size, batch composition, worker count, device or resumption. Noise is drawn on
the CPU and then moved, so a GPU run draws the same numbers as a CPU run.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Sequence

import torch


def image_seed(trial_seed: int, image_index: int) -> int:
    """A 63-bit seed from sha256 of both integers (no arithmetic collisions like seed + i)."""
    digest = hashlib.sha256(f"{int(trial_seed)}:{int(image_index)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def image_generator(trial_seed: int, image_index: int) -> torch.Generator:
    generator = torch.Generator(device="cpu")
    generator.manual_seed(image_seed(trial_seed, image_index))
    return generator


def image_generators(trial_seed: int, image_indices: Iterable[int]) -> list[torch.Generator]:
    return [image_generator(trial_seed, i) for i in image_indices]


def randn_per_image(generators: Sequence[torch.Generator], image_shape: Sequence[int],
                    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One standard normal draw of ``image_shape`` from each generator, stacked to [B, *shape]."""
    draws = [torch.randn(tuple(image_shape), generator=g, dtype=dtype) for g in generators]
    return torch.stack(draws).to(device)


def trial_noise(trial_seed: int, image_indices: Iterable[int], image_shape: Sequence[int],
                device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
    """(x_T, generators) for images ``image_indices`` of a trial: x_T is each generator's first
    draw, and the generators go on to supply that image's per-step noise in the sampler."""
    generators = image_generators(trial_seed, image_indices)
    return randn_per_image(generators, image_shape, device, dtype), generators
