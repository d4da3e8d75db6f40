"""One sampler configuration: what fixes image i of a set, and what it costs.

A ``SamplerConfig`` is the function i -> image: guidance kind and strength, the sampler, the
model (its p_uncond), the class distribution, the seed, the precision and the network batch.
How many images are drawn is not part of it: the sweep screens a configuration with a few
images and evaluates it again with more, under one ``id``. The `sample` stage, the sweep's
space and trials, their MLflow params and the leaderboard's rows all use this one type.

``strength`` means what the kind's registry entry says (pipeline.diffusion.guidance.GUIDANCE):
the classifier-free paper's w for cfg, autoguidance and pag (Ho & Salimans 2021, eq. 6; w = 0
is the plain conditional model, tables show s = 1 + w), ADM's scale s for classifier guidance.
``w`` and ``s`` are the table's pair. Strength 0 (or kind "none") is the unguided model, one
configuration whatever kind was asked for.

``guidance_interval = (lo, hi)`` restricts guidance to part of the trajectory (Kynkaanniemi et
al., 2024, "Applying guidance in a limited interval"): fractions of diffusion time u = t / (T - 1)
on the original training grid, u = 0 the data end and u = 1 pure noise; guidance acts where
lo <= u <= hi.

``net_batch`` is the row count of every network call (pipeline.generation.batching): images are
byte-identical for a given net batch on a given device type, so it is part of the identity.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Optional

import torch

from pipeline.diffusion.guidance import (
    ATTENTION,
    GUIDANCE,
    UNCONDITIONAL,
    GuidanceKind,
    GuidanceParts,
    guidance_kind,
)
from pipeline.diffusion.schedules import space_timesteps
from pipeline.nets.unet import PAG_LAYER_CHOICES, attention_layer_names, pag_layers

SAMPLER_KINDS = ("ddpm", "ddim")
CLASS_DISTS = ("balanced", "uniform")
PRECISIONS = ("fp32", "bf16")
# Rows per network call when the config leaves it null: 64 keeps CPU runs bit-reproducible at a
# small cost; a GPU needs larger calls to be busy.
NET_BATCH_BY_DEVICE = {"cpu": 64, "cuda": 256}
DEFAULT_TRAIN_TIMESTEPS = 1000  # diffusion.timesteps of the default config

# Settings added after the first sweeps ran, with the value every earlier configuration had
# implicitly. An id leaves a setting out at that value, so ids (and MLflow runs) made before it
# existed keep naming the same images. A new setting goes here with its implicit value.
_IMPLICIT_BEFORE = {"guidance_interval": (None,), "pag_layers": (None, "all"), "precision": ("fp32",),
                    "net_batch": (64,)}


def resolve_precision(precision: str, device_type: str) -> str:
    """``sample/sweep.precision`` as configured, or (auto) bf16 where the sampling device computes
    it natively (CUDA; a CPU with AVX512-BF16 or AMX) and fp32 elsewhere, where bf16 is emulated
    and slower. On this project's 2-core AMX machine bf16 halves the default's sampling time with
    metrics inside their intervals (README, "The first run")."""
    if precision != "auto":
        return precision
    if device_type == "cuda":
        return "bf16"
    return "bf16" if native_bf16_cpu() else "fp32"


def native_bf16_cpu() -> bool:
    """Whether this machine's CPU has bf16 instructions (AVX512-BF16 or AMX tiles)."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def resolve_net_batch(net_batch: Optional[int], device_type: str) -> int:
    """``sample/sweep.net_batch`` as configured, or (null) the default of the device type."""
    if net_batch is not None:
        return int(net_batch)
    return NET_BATCH_BY_DEVICE.get(device_type, NET_BATCH_BY_DEVICE["cuda"])


def interval_problem(interval) -> Optional[str]:
    if interval is None:
        return None
    if len(interval) != 2 or not 0.0 <= interval[0] < interval[1] <= 1.0:
        return "must be [lo, hi] with 0 <= lo < hi <= 1"
    return None


def pag_layers_problem(choice: Optional[str]) -> Optional[str]:
    """The form of a layer choice; the layers themselves are checked against the model."""
    if choice is None or choice in PAG_LAYER_CHOICES:
        return None
    if not isinstance(choice, str) or not all(part.strip() for part in choice.split(",")):
        return f"must be {' or '.join(PAG_LAYER_CHOICES)}, or layer names separated by commas"
    return None


@dataclass(frozen=True)
class SamplerConfig:
    guidance: str = "cfg"
    strength: float = 1.0
    guidance_interval: Optional[tuple[float, float]] = None
    pag_layers: Optional[str] = "paper"  # kinds that perturb attention only (see pipeline.nets.unet.pag_layers)
    sampler: str = "ddim"
    steps: int = 50
    eta: float = 0.0
    p_uncond: float = 0.1
    class_dist: str = "balanced"
    seed: int = 0
    precision: str = "fp32"  # bf16: the denoising networks under bf16 autocast (not the classifier)
    net_batch: int = NET_BATCH_BY_DEVICE["cpu"]

    def __post_init__(self):
        kind = guidance_kind(self.guidance)  # raises for an unknown kind
        for name, value, allowed in (("sampler", self.sampler, SAMPLER_KINDS),
                                     ("class_dist", self.class_dist, CLASS_DISTS),
                                     ("precision", self.precision, PRECISIONS)):
            if value not in allowed:
                raise ValueError(f"{name} {value!r}: expected one of {allowed}")
        if self.steps < 1 or self.net_batch < 1:
            raise ValueError("steps and net_batch must be >= 1")
        if self.strength < 0 or self.eta < 0:
            raise ValueError("strength and eta must be >= 0")
        if self.sampler == "ddpm" and self.eta != 0:
            raise ValueError("eta is a DDIM setting; DDPM has none")
        for name, problem in (("guidance_interval", interval_problem(self.guidance_interval)),
                              ("pag_layers", pag_layers_problem(self.pag_layers))):
            if problem:
                raise ValueError(f"{name} {getattr(self, name)!r}: {problem}")
        guided = kind.name != "none" and self.strength != 0
        interval, layers = self.guidance_interval, self.pag_layers
        if layers not in (None, *PAG_LAYER_CHOICES):  # names in one order: one id per set of layers
            layers = ",".join(sorted({part.strip() for part in layers.split(",")}))
        normal = dict(
            guidance=kind.name if guided else "none", strength=float(self.strength) if guided else 0.0,
            guidance_interval=tuple(float(v) for v in interval) if guided and interval is not None else None,
            pag_layers=layers if guided and ATTENTION in kind.needs else None,
            eta=float(self.eta), p_uncond=float(self.p_uncond), steps=int(self.steps), seed=int(self.seed),
            net_batch=int(self.net_batch))
        for name, value in normal.items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_section(cls, section, device_type: str = "cpu", **overrides: Any) -> "SamplerConfig":
        """The configuration of a config section with these field names (pipeline.config's
        SampleConfig), its null net_batch and auto precision resolved for ``device_type``."""
        fields = {name: getattr(section, name) for name in cls.__dataclass_fields__ if hasattr(section, name)}
        fields["net_batch"] = resolve_net_batch(fields.get("net_batch"), device_type)
        fields["precision"] = resolve_precision(fields.get("precision", "fp32"), device_type)
        return cls(**{**fields, **overrides})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SamplerConfig":
        """The inverse of ``to_dict``; other keys (a trial row's metrics, ``config_id``) are ignored."""
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["guidance_interval"] = list(self.guidance_interval) if self.guidance_interval is not None else None
        return d

    @property
    def kind(self) -> GuidanceKind:
        return guidance_kind(self.guidance)

    @property
    def guided(self) -> bool:
        return self.guidance != "none"

    @property
    def w(self) -> Optional[float]:
        """The classifier-free paper's w for tables (None for a kind whose strength is a scale)."""
        return self.kind.table(self.strength)[0]

    @property
    def s(self) -> float:
        """The scale for tables: 1 + w, or the strength itself for a scale (classifier guidance)."""
        return self.kind.table(self.strength)[1]

    def guided_denoiser(self, parts: GuidanceParts, num_train_timesteps: int):
        """The kind's wrapper with this strength and interval around ``parts.denoiser`` (the
        registry's build; ``parts`` holds what the kind needs)."""
        return self.kind.build(parts, self.strength, interval_timesteps(self.guidance_interval, num_train_timesteps))

    @property
    def identity(self) -> dict[str, Any]:
        """What ``id`` hashes: every setting, but those added later while at their implicit value."""
        return {k: v for k, v in self.to_dict().items() if v not in _IMPLICIT_BEFORE.get(k, ())}

    @property
    def id(self) -> str:
        """A stable 12-hex-digit id of the images this configuration makes."""
        return hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode()).hexdigest()[:12]

    @property
    def name(self) -> str:
        """A short readable name, e.g. ``cfg-w1-ddim50-p0.1``; settings at their usual value are left out."""
        parts = [f"{self.guidance}-{self.kind.symbol}{self.strength:g}" if self.guided else "none"]
        if self.guidance_interval is not None:
            parts.append(f"i{self.guidance_interval[0]:g}-{self.guidance_interval[1]:g}")
        if self.pag_layers not in (None, "paper"):
            parts.append(f"layers{self.pag_layers}")
        parts.append(f"{self.sampler}{self.steps}")
        if self.eta:
            parts.append(f"eta{self.eta:g}")
        parts.append(f"p{self.p_uncond:g}")
        if self.class_dist != "balanced":
            parts.append(self.class_dist)
        if self.seed:
            parts.append(f"seed{self.seed}")
        if self.net_batch != NET_BATCH_BY_DEVICE["cpu"]:
            parts.append(f"nb{self.net_batch}")
        if self.precision != "fp32":
            parts.append(self.precision)
        return "-".join(parts)


# ----------------------------------------------------------------------------------------------
# What a configuration costs


def interval_timesteps(interval: Optional[tuple[float, float]], num_train_timesteps: int
                       ) -> Optional[tuple[int, int]]:
    """Fractions (lo, hi) of u = t / (T - 1) -> the inclusive timestep interval of the guidance
    wrappers (pipeline.diffusion.guidance): ceil(lo (T - 1)) .. floor(hi (T - 1))."""
    if interval is None:
        return None
    last = num_train_timesteps - 1
    lo, hi = math.ceil(interval[0] * last - 1e-9), math.floor(interval[1] * last + 1e-9)
    return lo, hi


def guided_steps(config: SamplerConfig, num_train_timesteps: int = DEFAULT_TRAIN_TIMESTEPS) -> int:
    """How many of the configuration's sampling steps apply guidance. The steps are evenly spaced
    on the training grid, first and last included (Improved DDPM's respacing, section 4)."""
    if not config.guided:
        return 0
    window = interval_timesteps(config.guidance_interval, num_train_timesteps)
    if window is None:
        return config.steps
    lo, hi = window
    return sum(lo <= t <= hi for t in space_timesteps(num_train_timesteps, config.steps))


def nfe_per_image(config: SamplerConfig, num_train_timesteps: int = DEFAULT_TRAIN_TIMESTEPS) -> int:
    """Network evaluations per image: one per step for the main model, plus one per guided step
    for the guiding pass (CFG's unconditional pass, PAG's perturbed pass and the autoguidance
    guide count 1 each even when batched with the conditional pass; classifier guidance counts
    its classifier forward+backward as 1). ``num_train_timesteps`` matters only with an interval."""
    return config.steps + guided_steps(config, num_train_timesteps)


# ----------------------------------------------------------------------------------------------
# The `sample` and `sweep` sections, checked when the config is loaded (pipeline.config)


def config_problems(c) -> Iterator[tuple[str, Any, str]]:
    """(key, value, problem) for each rule a config's `sample` or `sweep` section breaks.
    ``c`` is a pipeline.config.Config."""
    sample, sweep, trained = c.sample, c.sweep, c.train.p_uncond
    timesteps = c.diffusion.timesteps
    model = c.model
    layer_names = attention_layer_names(c.data.resolution, model.channel_mult, model.num_res_blocks,
                                        model.attention_resolutions)

    def layers_problem(choice: str) -> Optional[str]:
        problem = pag_layers_problem(choice)
        if problem is None:
            try:
                pag_layers(layer_names, choice)
            except ValueError as exc:
                problem = str(exc)
        return problem

    if sample.guidance not in GUIDANCE:
        yield "sample.guidance", sample.guidance, f"must be one of {', '.join(map(repr, GUIDANCE))}"
        return
    if sample.steps > timesteps:
        yield "sample.steps", sample.steps, f"more than diffusion.timesteps = {timesteps}"
    if sample.sampler == "ddpm" and sample.eta != 0.0:
        yield "sample.eta", sample.eta, "eta is a DDIM setting; use sample.sampler: ddim"
    if sample.p_uncond not in trained:
        yield "sample.p_uncond", sample.p_uncond, f"no model is trained with it (train.p_uncond = {trained})"
    if UNCONDITIONAL in GUIDANCE[sample.guidance].needs and sample.p_uncond == 0.0 and sample.strength > 0:
        yield ("sample.guidance", sample.guidance,
               "needs the model's unconditional branch: a model trained with p_uncond > 0")
    problem = interval_problem(sample.guidance_interval)
    if problem:
        yield "sample.guidance_interval", sample.guidance_interval, problem
    problem = layers_problem(sample.pag_layers) if ATTENTION in GUIDANCE[sample.guidance].needs else None
    if problem:
        yield "sample.pag_layers", sample.pag_layers, problem

    if not sweep.guidance or not sweep.samplers or not sweep.steps:
        yield "sweep", "empty list", "sweep.guidance, sweep.samplers and sweep.steps need at least one value"
    for kind, strengths in sweep.guidance.items():
        if kind not in GUIDANCE:
            yield f"sweep.guidance.{kind}", strengths, f"not a guidance kind (known: {', '.join(GUIDANCE)})"
        if not strengths:
            yield (f"sweep.guidance.{kind}", strengths,
                   "a listed guidance kind needs at least one strength (leave the kind out to skip it)")
        for i, v in enumerate(strengths):
            if v < 0:
                yield f"sweep.guidance.{kind}[{i}]", v, "guidance strengths must be non-negative"
            elif kind == "none" and v != 0:
                yield f"sweep.guidance.none[{i}]", v, "the unguided model has no strength: use [0.0]"
    for i, interval in enumerate(sweep.guidance_interval):
        problem = interval_problem(interval)
        if problem:
            yield f"sweep.guidance_interval[{i}]", interval, problem
    if not sweep.guidance_interval or not sweep.pag_layers:
        yield ("sweep", "empty list",
               "sweep.guidance_interval and sweep.pag_layers need at least one value (null / paper)")
    if any(ATTENTION in GUIDANCE[k].needs for k in sweep.guidance if k in GUIDANCE):
        for i, choice in enumerate(sweep.pag_layers):
            problem = layers_problem(choice)
            if problem:
                yield f"sweep.pag_layers[{i}]", choice, problem
    for i, steps in enumerate(sweep.steps):
        if steps < 1 or steps > timesteps:
            yield f"sweep.steps[{i}]", steps, f"must be in [1, diffusion.timesteps = {timesteps}]"
    if sweep.p_uncond is not None and not sweep.p_uncond:
        yield "sweep.p_uncond", sweep.p_uncond, "no model to sweep (null sweeps every trained model)"
    for i, p in enumerate(sweep.p_uncond or []):
        if p not in trained:
            yield f"sweep.p_uncond[{i}]", p, f"no model is trained with it (train.p_uncond = {trained})"
    if sweep.screen_images > sweep.full_images:
        yield "sweep.screen_images", sweep.screen_images, "the screening round must not exceed sweep.full_images"
