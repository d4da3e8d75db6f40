"""The class-conditional diffusion model and the noisy classifier as training Tasks.

DiffusionTask, one step on a worker's batch (x_0, y):
- classifier-free dropout (Ho & Salimans, 2021, Algorithm 1): y <- the null label with
  probability p_uncond, so one network learns eps(x_t, c) and eps(x_t, null);
- t ~ Uniform{0..T-1}, or importance-sampled with p_t ~ sqrt(E[L_t^2]) (Improved DDPM eq. 18,
  section 3.3; the history of the last 10 losses per t is shared by all ranks and checkpointed
  through `state_dict`, so a resumed run samples the same t);
- L = L_simple (DDPM eq. 14) or L_hybrid = L_simple + 0.001 L_vlb (Improved DDPM eq. 16), via
  pipeline.diffusion.losses.diffusion_loss, weighted by 1 / (T p_t) under importance sampling.
Every random draw (dropout, t, noise) comes from the step generator, seeded from
(seed, rank, images seen), so the task itself holds no seed.

NoisyClassifierTask: cross-entropy of p_phi(y | x_t, t) with t ~ U and x_t ~ q(x_t | x_0) (ADM,
Dhariwal & Nichol 2021, section 4: the classifier is trained on noisy images of every level).

Both record the loss per quartile of t (t * 4 // T) through `Task.step_metrics`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from pipeline.arguments import ArgumentError
from pipeline.diffusion.forward import q_sample
from pipeline.diffusion.losses import (
    ImportanceTimestepSampler,
    UniformTimestepSampler,
    check_loss_kind,
    diffusion_loss,
)
from pipeline.nets.classifier import NoisyClassifier
from pipeline.nets.unet import UNet
from pipeline.training.task import Task
from pipeline.weights import schedule_from

# Function-local imports: they bring in webdataset, which importing this module does not need.

QUARTILES = 4


def check_p_uncond(p_uncond: float) -> None:
    """The classifier-free dropout probability."""
    if not 0.0 <= p_uncond <= 1.0:
        raise ArgumentError("p_uncond", p_uncond, "must be in [0, 1]")


def gather_across_workers(value: torch.Tensor) -> torch.Tensor:
    """Concatenate one equally shaped tensor from every rank (rank order); itself without DDP."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return value
    parts = [torch.empty_like(value) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, value.contiguous())
    return torch.cat(parts)


def quartile_sums(t: torch.Tensor, losses: torch.Tensor, num_timesteps: int, prefix: str = "loss_t_q"
                  ) -> dict[str, tuple[float, float]]:
    """name -> (sum of per-sample losses, count) for each quartile of t (q0: the least noisy)."""
    bucket = (t.long() * QUARTILES // num_timesteps).clamp(max=QUARTILES - 1)
    losses = losses.detach().double().cpu()
    bucket = bucket.cpu()
    return {f"{prefix}{q}": (float(losses[bucket == q].sum()), float((bucket == q).sum()))
            for q in range(QUARTILES)}


class _NoisingTask:
    """What both tasks below share; they hold `diffusion` (the schedule's settings) and a
    worker-side `runtime` dict."""

    @property
    def schedule(self):
        if "schedule" not in self.runtime:
            self.runtime["schedule"] = schedule_from(self.diffusion)
        return self.runtime["schedule"]

    def step_metrics(self) -> dict[str, tuple[float, float]]:
        return self.runtime.pop("metrics", {})


@dataclass(frozen=True)
class DiffusionTask(_NoisingTask, Task):
    unet: dict[str, Any]              # pipeline.nets.unet.UNet constructor arguments (num_classes set)
    diffusion: dict[str, Any]         # networks.diffusion_dict(cfg.diffusion): timesteps, schedule, loss, ...
    p_uncond: float = 0.1
    importance_sampling: bool = False
    vlb_weight: float = 0.001         # Improved DDPM's lambda
    runtime: dict = field(default_factory=dict, compare=False, repr=False)  # worker-side: schedule, sampler, metrics

    def __post_init__(self):
        if self.unet.get("num_classes") is None:
            raise ValueError("DiffusionTask trains a class-conditional UNet: unet['num_classes'] is required")
        check_loss_kind(self.diffusion.get("loss", "simple"), bool(self.unet.get("learn_sigma")))
        check_p_uncond(self.p_uncond)

    @property
    def null_label(self) -> int:
        return int(self.unet["num_classes"])

    @property
    def sampler(self):
        if "sampler" not in self.runtime:
            n = int(self.diffusion["timesteps"])
            self.runtime["sampler"] = ImportanceTimestepSampler(n) if self.importance_sampling else UniformTimestepSampler(n)
        return self.runtime["sampler"]

    def build_model(self):
        return UNet(**self.unet)

    def drop_labels(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Classifier-free dropout: each label becomes the null label with probability p_uncond."""
        drop = torch.rand(labels.shape[0], generator=generator) < self.p_uncond
        return torch.where(drop.to(labels.device), torch.full_like(labels, self.null_label), labels)

    def loss(self, model, images, labels, generator):
        labels = self.drop_labels(labels, generator)
        t, weights = self.sampler.sample(images.shape[0], generator)
        noise = torch.randn(images.shape, generator=generator).to(images.device)
        t, weights = t.to(images.device), weights.to(images.device)
        terms = diffusion_loss(model, self.schedule, images, t, noise, labels,
                               learned_sigma=bool(self.unet.get("learn_sigma")), vlb_weight=self.vlb_weight)
        per_sample = terms["loss"]
        all_t = gather_across_workers(t)
        all_losses = gather_across_workers(per_sample.detach().float())
        self.sampler.update(all_t.cpu(), all_losses.cpu())  # every rank keeps the same history (ADM)
        self.runtime["metrics"] = quartile_sums(all_t, all_losses, len(self.schedule))
        return (weights * per_sample).mean()

    def state_dict(self) -> dict[str, Any]:
        return {"timestep_sampler": self.sampler.state_dict()} if self.importance_sampling else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.importance_sampling:
            self.sampler.load_state_dict(state["timestep_sampler"])


@dataclass(frozen=True)
class NoisyClassifierTask(_NoisingTask, Task):
    classifier: dict[str, Any]        # pipeline.nets.classifier.NoisyClassifier constructor arguments
    diffusion: dict[str, Any]
    runtime: dict = field(default_factory=dict, compare=False, repr=False)

    def build_model(self):
        return NoisyClassifier(**self.classifier)

    def loss(self, model, images, labels, generator):
        n = len(self.schedule)
        t = torch.randint(0, n, (images.shape[0],), generator=generator).to(images.device)
        noise = torch.randn(images.shape, generator=generator).to(images.device)
        x_t = q_sample(self.schedule, images, t, noise)
        logits = model(x_t, self.schedule.timesteps.to(t.device)[t])
        per_sample = F.cross_entropy(logits, labels, reduction="none")
        self.runtime["metrics"] = quartile_sums(gather_across_workers(t), gather_across_workers(per_sample.detach()), n)
        return per_sample.mean()


@torch.no_grad()
def noisy_accuracy(model, data: str, diffusion: dict[str, Any], split: str = "val", buckets: int = 4,
                   repeats: int = 4, seed: int = 0, batch_size: int = 500) -> dict[str, float]:
    """Top-1 / top-5 of a noisy classifier per noise-level bucket of t (bucket b holds
    t in [b T / buckets, (b + 1) T / buckets)), each image noised `repeats` times per bucket
    at t drawn uniformly inside the bucket from a generator seeded by `seed`."""
    from pipeline.data.loader import StreamSpec, make_loader

    schedule = schedule_from(diffusion)
    n = len(schedule)
    generator = torch.Generator().manual_seed(seed)
    correct1, correct5, seen = torch.zeros(buckets), torch.zeros(buckets), torch.zeros(buckets)
    model.eval()
    for images, labels in make_loader(data, StreamSpec(split=split, batch_size=batch_size, infinite=False)):
        for b in range(buckets):
            lo, hi = b * n // buckets, (b + 1) * n // buckets
            for _ in range(repeats):
                t = torch.randint(lo, hi, (images.shape[0],), generator=generator)
                x_t = q_sample(schedule, images, t, torch.randn(images.shape, generator=generator))
                logits = model(x_t, schedule.timesteps[t])
                top = logits.topk(min(5, logits.shape[1]), dim=1).indices
                correct1[b] += (top[:, 0] == labels).sum()
                correct5[b] += (top == labels[:, None]).any(dim=1).sum()
                seen[b] += labels.shape[0]
    out = {}
    for b in range(buckets):
        out[f"val_top1_t_q{b}"] = float(correct1[b] / seen[b].clamp(min=1))
        out[f"val_top5_t_q{b}"] = float(correct5[b] / seen[b].clamp(min=1))
    out["val_top1"] = float(correct1.sum() / seen.sum().clamp(min=1))
    out["val_top5"] = float(correct5.sum() / seen.sum().clamp(min=1))
    return out
