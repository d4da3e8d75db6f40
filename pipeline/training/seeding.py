"""Per-step random streams. Step randomness is a function of (seed, rank, images seen) only,
as in EDM2, so a run resumed from a checkpoint draws exactly what an uninterrupted run draws
and the checkpoint needs no RNG state."""
from __future__ import annotations

import hashlib

import torch


def step_seed(seed: int, rank: int, nimg: int) -> int:
    digest = hashlib.sha256(f"train:{int(seed)}:{int(rank)}:{int(nimg)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def step_generator(seed: int, rank: int, nimg: int) -> torch.Generator:
    """A CPU generator for the step that starts after `nimg` global images."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(step_seed(seed, rank, nimg))
    return generator


def seed_global_rng(seed: int, rank: int, nimg: int) -> None:
    """Seed torch's global generators (CPU and CUDA) for the step: dropout and other layers that
    cannot take a generator then draw the same numbers in a resumed run."""
    torch.manual_seed(step_seed(seed, rank, nimg) ^ 0x5EED)
