"""Noise schedules: beta_t on a discrete grid, and respacing of that grid.

A :class:`Schedule` holds the betas of a (possibly respaced) discrete diffusion and every
quantity derived from them, in float64. ``schedule.timesteps[i]`` is the timestep on the
*original* training grid that index ``i`` stands for; networks are always called with that
original timestep (Improved DDPM, section 4 "Improving sampling speed").

References
- DDPM (Ho et al., 2020): linear schedule beta_1 = 1e-4 ... beta_T = 0.02 for T = 1000.
- Improved DDPM (Nichol & Dhariwal, 2021), eq. 17: cosine schedule
  alpha_bar_t = f(t) / f(0), f(t) = cos^2(((t/T + s) / (1 + s)) * pi/2), s = 0.008,
  beta_t = 1 - alpha_bar_t / alpha_bar_{t-1} clipped to at most 0.999.
- Classifier-free guidance (Ho & Salimans, 2021), section 2: continuous-time log-SNR
  lambda(u) = -2 log tan(a u + b), b = arctan(exp(-lambda_max / 2)),
  a = arctan(exp(-lambda_min / 2)) - b, with alpha^2 = sigmoid(lambda).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from pipeline.arguments import ArgumentError

MAX_BETA = 0.999  # Improved DDPM: clip betas to avoid a singularity at t = T


class Schedule:
    """A discrete diffusion schedule and its derived quantities (all float64, 1-D, length N).

    ``betas``: beta_i of this (possibly respaced) chain.
    ``timesteps``: int64, the original-grid timestep of each index (arange(N) when not respaced).
    ``num_train_timesteps``: length of the original grid.
    """

    def __init__(self, betas, timesteps=None, num_train_timesteps: int | None = None):
        betas = torch.as_tensor(betas, dtype=torch.float64).flatten()
        if betas.numel() == 0:
            raise ValueError("a schedule needs at least one step")
        if not bool(((betas > 0) & (betas <= 1)).all()):
            raise ValueError("betas must lie in (0, 1]")
        n = betas.numel()
        self.betas = betas
        self.timesteps = (torch.arange(n, dtype=torch.int64) if timesteps is None
                          else torch.as_tensor(timesteps, dtype=torch.int64).flatten())
        if self.timesteps.numel() != n:
            raise ValueError("timesteps and betas must have the same length")
        self.num_train_timesteps = int(num_train_timesteps if num_train_timesteps is not None else n)
        self._converted: dict = {}

        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.alphas_cumprod_prev = torch.cat([betas.new_ones(1), self.alphas_cumprod[:-1]])
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()
        self.sqrt_recip_alphas_cumprod = self.alphas_cumprod.rsqrt()
        self.sqrt_recipm1_alphas_cumprod = (1.0 / self.alphas_cumprod - 1.0).sqrt()
        # Posterior q(x_{t-1} | x_t, x_0) (DDPM eq. 6-7).
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # beta~_0 = 0, so its log is clipped to beta~_1 (as in Improved DDPM's code) ...
        if n > 1:
            clipped = torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]])
        else:
            clipped = self.betas.clone()
        self.posterior_log_variance_clipped = clipped.log()
        # DDPM's "large" fixed variance sigma^2 = beta_t, with beta~_1 at t = 0 (as ADM's code)
        large = betas.clone()
        if n > 1:
            large[0] = self.posterior_variance[1]
        self.log_betas_large = large.log()
        self.posterior_mean_coef1 = betas * self.alphas_cumprod_prev.sqrt() / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * self.alphas.sqrt() / (1.0 - self.alphas_cumprod)

    def __len__(self) -> int:
        return self.betas.numel()

    def __repr__(self) -> str:
        return f"Schedule(steps={len(self)}, num_train_timesteps={self.num_train_timesteps})"

    def gather(self, name: str, index: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``self.<name>[index]`` shaped [B, 1, 1, ...] to broadcast against ``like``, in its dtype
        and on its device (the converted table is cached, so a sampling loop copies it once)."""
        key = (name, like.device, like.dtype)
        table = self._converted.get(key)
        if table is None:
            # cast on the CPU first: some devices (MPS) have no float64
            table = self._converted[key] = getattr(self, name).to(like.dtype).to(like.device)
        return table[index.to(like.device).long()].reshape(-1, *([1] * (like.ndim - 1)))

    def respace(self, use_timesteps: Sequence[int]) -> "Schedule":
        """Keep only ``use_timesteps`` (indices into this schedule), with betas recomputed so
        that alpha_bar at every kept step is unchanged (Improved DDPM, section 4):
        beta'_k = 1 - alpha_bar[t_k] / alpha_bar[t_{k-1}]."""
        keep = sorted(set(int(t) for t in use_timesteps))
        if not keep or keep[0] < 0 or keep[-1] >= len(self):
            raise ValueError(f"timesteps to keep must lie in [0, {len(self)})")
        alphas_cumprod = self.alphas_cumprod[keep]
        prev = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
        betas = 1.0 - alphas_cumprod / prev
        return Schedule(betas, self.timesteps[keep], self.num_train_timesteps)


def linear_betas(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """DDPM's linear schedule, rescaled by 1000 / T so that other T keep its shape (as ADM does)."""
    scale = 1000.0 / num_timesteps
    return torch.linspace(scale * beta_start, scale * beta_end, num_timesteps, dtype=torch.float64)


def cosine_alpha_bar(u: torch.Tensor, s: float = 0.008) -> torch.Tensor:
    """Improved DDPM eq. 17 as a function of u = t / T in [0, 1] (not yet divided by f(0))."""
    return torch.cos((u + s) / (1.0 + s) * math.pi / 2) ** 2


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = MAX_BETA) -> torch.Tensor:
    """Improved DDPM eq. 17: beta_t = 1 - alpha_bar(t) / alpha_bar(t - 1), clipped at max_beta."""
    u = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    alpha_bar = cosine_alpha_bar(u, s) / cosine_alpha_bar(torch.zeros((), dtype=torch.float64), s)
    return (1.0 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)


def check_lambda_range(lambda_min: float, lambda_max: float) -> None:
    if lambda_min >= lambda_max:
        raise ArgumentError("lambda_min", lambda_min, "must be below `lambda_max`")


def cfg_logsnr(u: torch.Tensor, lambda_min: float = -20.0, lambda_max: float = 20.0) -> torch.Tensor:
    """Classifier-free guidance paper, section 2: lambda(u) = -2 log tan(a u + b), u in [0, 1],
    decreasing from lambda_max at u = 0 to lambda_min at u = 1."""
    check_lambda_range(lambda_min, lambda_max)
    u = torch.as_tensor(u, dtype=torch.float64)
    b = math.atan(math.exp(-lambda_max / 2))
    a = math.atan(math.exp(-lambda_min / 2)) - b
    return -2.0 * torch.log(torch.tan(a * u + b))


def logsnr_to_alpha_bar(logsnr: torch.Tensor) -> torch.Tensor:
    """Variance preserving: alpha^2 = sigmoid(lambda), sigma^2 = sigmoid(-lambda)."""
    return torch.sigmoid(logsnr)


def cfg_logsnr_betas(num_timesteps: int, lambda_min: float = -20.0, lambda_max: float = 20.0,
                     max_beta: float = MAX_BETA) -> torch.Tensor:
    """A discrete schedule whose alpha_bar at index t is sigmoid(lambda((t + 1) / T))."""
    u = torch.arange(1, num_timesteps + 1, dtype=torch.float64) / num_timesteps
    alpha_bar = logsnr_to_alpha_bar(cfg_logsnr(u, lambda_min, lambda_max))
    prev = torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])
    return (1.0 - alpha_bar / prev).clamp(min=1e-12, max=max_beta)


def make_schedule(kind: str = "cosine", num_timesteps: int = 1000, **kwargs) -> Schedule:
    """``kind``: "linear", "cosine" or "cfg_logsnr" (kwargs go to the matching ``*_betas``)."""
    makers = {"linear": linear_betas, "cosine": cosine_betas, "cfg_logsnr": cfg_logsnr_betas}
    if kind not in makers:
        raise ValueError(f"unknown schedule {kind!r}; expected one of {sorted(makers)}")
    return Schedule(makers[kind](num_timesteps, **kwargs))


def space_timesteps(num_timesteps: int, section_counts: str | int | Sequence[int]) -> list[int]:
    """Which original timesteps to keep (Improved DDPM respacing).

    ``section_counts``: an int or "N" (N evenly spaced steps), a comma list "10,15,20" (the grid
    is cut into that many equal sections and each keeps its count, evenly spaced, first and
    last step of a section included), or "ddimN" (0, k, 2k, ... with the smallest integer stride k
    that gives exactly N steps, as DDIM and Improved DDPM's code).
    """
    if isinstance(section_counts, str):
        spec = section_counts.strip()
        if spec.startswith("ddim"):
            wanted = int(spec[len("ddim"):])
            for stride in range(1, num_timesteps + 1):
                if len(range(0, num_timesteps, stride)) == wanted:
                    return list(range(0, num_timesteps, stride))
            raise ValueError(f"no integer stride gives exactly {wanted} DDIM steps out of {num_timesteps}")
        counts = [int(part) for part in spec.split(",") if part.strip()]
    elif isinstance(section_counts, int):
        counts = [section_counts]
    else:
        counts = [int(c) for c in section_counts]
    if not counts:
        raise ValueError("section_counts is empty")

    size_per, extra = divmod(num_timesteps, len(counts))
    kept: list[int] = []
    start = 0
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if not 1 <= count <= size:
            raise ValueError(f"cannot take {count} steps from a section of {size}")
        stride = (size - 1) / (count - 1) if count > 1 else 1.0
        kept.extend(start + round(j * stride) for j in range(count))
        start += size
    return sorted(set(kept))


def respaced(schedule: Schedule, section_counts: str | int | Sequence[int]) -> Schedule:
    """``schedule`` respaced to ``section_counts`` steps (see :func:`space_timesteps`)."""
    return schedule.respace(space_timesteps(len(schedule), section_counts))
