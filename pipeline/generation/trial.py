"""One sampler configuration (a "trial") and what it costs.

Conventions (DESIGN.md): ``w`` is the classifier-free guidance paper's weight (Ho & Salimans,
2021, eq. 6: eps~ = (1 + w) eps(x, c) - w eps(x, null); w = 0 is the plain conditional model),
used the same way for autoguidance (Karras et al., 2024) and perturbed-attention guidance
(Ahn et al., 2024). For classifier guidance ``w`` is ADM's classifier scale s (Dhariwal &
Nichol, 2021, Algorithm 1/2) applied to the conditional model.

``interval = (lo, hi)`` restricts guidance to part of the trajectory (Kynkaanniemi et al.,
2024, "Applying guidance in a limited interval"): fractions of diffusion time u = t / (T - 1)
on the original training grid, u = 0 the data end and u = 1 pure noise; guidance acts where
lo <= u <= hi.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Optional

GUIDANCE_KINDS = ("none", "cfg", "classifier", "autoguidance", "pag")
SAMPLER_KINDS = ("ddpm", "ddim")
CLASS_DISTS = ("balanced", "uniform")
PRECISIONS = ("fp32", "bf16")
DEFAULT_TRAIN_TIMESTEPS = 1000  # diffusion.timesteps of the default config


@dataclass(frozen=True)
class SamplerTrial:
    guidance: str = "cfg"
    w: float = 1.0
    interval: Optional[tuple[float, float]] = None
    sampler: str = "ddim"
    steps: int = 50
    eta: float = 0.0
    p_uncond: float = 0.1
    num_images: int = 1000
    class_dist: str = "balanced"
    seed: int = 0
    precision: str = "fp32"  # bf16: the denoising networks under bf16 autocast (not the classifier)

    def __post_init__(self):
        if self.guidance not in GUIDANCE_KINDS:
            raise ValueError(f"guidance {self.guidance!r}: expected one of {GUIDANCE_KINDS}")
        if self.sampler not in SAMPLER_KINDS:
            raise ValueError(f"sampler {self.sampler!r}: expected one of {SAMPLER_KINDS}")
        if self.class_dist not in CLASS_DISTS:
            raise ValueError(f"class_dist {self.class_dist!r}: expected one of {CLASS_DISTS}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}: expected one of {PRECISIONS}")
        if self.steps < 1 or self.num_images < 1:
            raise ValueError("steps and num_images must be >= 1")
        if self.w < 0 or self.eta < 0:
            raise ValueError("w and eta must be >= 0")
        if self.sampler == "ddpm" and self.eta != 0:
            raise ValueError("eta is a DDIM setting; DDPM has none")
        if self.interval is not None:
            lo, hi = (float(v) for v in self.interval)
            if not 0.0 <= lo < hi <= 1.0:
                raise ValueError(f"interval {self.interval}: need 0 <= lo < hi <= 1")
            object.__setattr__(self, "interval", (lo, hi))
        object.__setattr__(self, "w", float(self.w))
        object.__setattr__(self, "eta", float(self.eta))
        object.__setattr__(self, "p_uncond", float(self.p_uncond))

    @classmethod
    def from_sample_config(cls, sample, **overrides: Any) -> "SamplerTrial":
        """The trial of a `sample` config section (pipeline.config.SampleConfig)."""
        interval = sample.guidance_interval
        fields = dict(guidance=sample.guidance, w=sample.w, interval=tuple(interval) if interval else None,
                      sampler=sample.sampler, steps=sample.steps, eta=sample.eta, p_uncond=sample.p_uncond,
                      num_images=sample.num_images, class_dist=sample.class_dist, seed=sample.seed,
                      precision=sample.precision)
        fields.update(overrides)
        return cls(**fields)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SamplerTrial":
        d = dict(d)
        if d.get("interval") is not None:
            d["interval"] = tuple(d["interval"])
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["interval"] = list(self.interval) if self.interval is not None else None
        return d

    @property
    def guided(self) -> bool:
        return self.guidance != "none" and self.w != 0

    @property
    def name(self) -> str:
        """A short readable id, e.g. ``cfg-w1-ddim50-p0.1-n1000-balanced-s0``."""
        parts = [self.guidance if self.guidance == "none" else f"{self.guidance}-w{self.w:g}"]
        if self.interval is not None:
            parts.append(f"i{self.interval[0]:g}-{self.interval[1]:g}")
        parts.append(f"{self.sampler}{self.steps}")
        if self.sampler == "ddim" and self.eta:
            parts.append(f"eta{self.eta:g}")
        parts += [f"p{self.p_uncond:g}", f"n{self.num_images}", self.class_dist, f"s{self.seed}"]
        if self.precision != "fp32":
            parts.append(self.precision)
        return "-".join(parts)


def interval_timesteps(interval: Optional[tuple[float, float]], num_train_timesteps: int
                       ) -> Optional[tuple[int, int]]:
    """Fractions (lo, hi) of u = t / (T - 1) -> the inclusive timestep interval of the guidance
    wrappers (pipeline.diffusion.guidance): ceil(lo (T - 1)) .. floor(hi (T - 1))."""
    if interval is None:
        return None
    last = num_train_timesteps - 1
    lo, hi = math.ceil(interval[0] * last - 1e-9), math.floor(interval[1] * last + 1e-9)
    return lo, hi


def sampling_timesteps(steps: int, num_train_timesteps: int) -> list[int]:
    """Original-grid timesteps a ``steps``-step sampler visits: evenly spaced, first and last
    included (Improved DDPM's respacing, section 4; pipeline.diffusion.schedules.space_timesteps)."""
    from pipeline.diffusion.schedules import space_timesteps

    return space_timesteps(num_train_timesteps, steps)


def guided_steps(trial: SamplerTrial, num_train_timesteps: int = DEFAULT_TRAIN_TIMESTEPS) -> int:
    """How many of the trial's sampling steps apply guidance."""
    if not trial.guided:
        return 0
    window = interval_timesteps(trial.interval, num_train_timesteps)
    if window is None:
        return trial.steps
    lo, hi = window
    return sum(lo <= t <= hi for t in sampling_timesteps(trial.steps, num_train_timesteps))


def nfe_per_image(trial: SamplerTrial, num_train_timesteps: int = DEFAULT_TRAIN_TIMESTEPS) -> int:
    """Network evaluations per image: one per step for the main model, plus one per guided step
    for the guiding pass (CFG's unconditional pass, PAG's perturbed pass and the autoguidance
    guide count 1 each even when batched with the conditional pass; classifier guidance counts
    its classifier forward+backward as 1). ``num_train_timesteps`` matters only with an interval."""
    return trial.steps + guided_steps(trial, num_train_timesteps)
