"""Guidance as denoiser wrappers: each one is itself a denoiser, so every sampler takes it.

Project convention (classifier-free guidance paper): guidance weight ``w``, w = 0 is the plain
conditional model; the scale people quote (DiT, EDM2, diffusers) is s = 1 + w. Every wrapper
takes ``interval=(t_lo, t_hi)``: guidance acts only where t_lo <= t <= t_hi on the ORIGINAL
timestep grid (inclusive); elsewhere the plain conditional output is returned, and the
guiding pass is skipped for those images.

Each wrapper keeps the learned variance of the conditional / main pass (as GLIDE and ADM do):
guidance changes eps only.

``GUIDANCE`` is the registry of guidance kinds the pipeline samples with: each kind's wrapper,
what its strength is called and means, its (w, s) for tables and what it needs beyond the main
model. A new kind is a wrapper and one ``register(GuidanceKind(...))``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from pipeline.diffusion.denoiser import Denoiser, DenoiserOutput, as_output
from pipeline.diffusion.schedules import Schedule


def guidance_active(t: torch.Tensor, interval: Optional[tuple[int, int]]) -> torch.Tensor:
    """Boolean [B]: which images get guidance at original timesteps ``t``."""
    if interval is None:
        return torch.ones_like(t, dtype=torch.bool)
    lo, hi = interval
    return (t >= lo) & (t <= hi)


def _first_rows(out: DenoiserOutput, batch: int) -> DenoiserOutput:
    """The first ``batch`` rows of a doubled-batch output (views, no copies)."""
    return DenoiserOutput(
        eps=out.eps[:batch],
        var_frac=None if out.var_frac is None else out.var_frac[:batch],
        classifier_grad=None if out.classifier_grad is None else out.classifier_grad[:batch],
    )


def _extrapolate(plain: DenoiserOutput, guide_eps: torch.Tensor, active: torch.Tensor, w: float) -> DenoiserOutput:
    """eps <- eps + w (eps - eps_guide) = (1 + w) eps - w eps_guide on the active rows."""
    if guide_eps.shape[0] == plain.eps.shape[0]:
        return plain.with_eps((1 + w) * plain.eps - w * guide_eps)
    eps = plain.eps.clone()
    eps[active] = (1 + w) * plain.eps[active] - w * guide_eps
    return plain.with_eps(eps)


def _twice(x: torch.Tensor, active: torch.Tensor, all_active: bool) -> torch.Tensor:
    return torch.cat([x, x if all_active else x[active]])


def _is_per_row(value, batch: int) -> bool:
    return isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == batch


def _kwargs_twice(kwargs: dict, active: torch.Tensor, all_active: bool) -> dict:
    """Per-row keyword tensors (e.g. an inner PAG mask) follow the rows when the batch is doubled."""
    batch = active.shape[0]
    return {k: _twice(v, active, all_active) if _is_per_row(v, batch) else v for k, v in kwargs.items()}


def _kwargs_rows(kwargs: dict, rows: torch.Tensor) -> dict:
    batch = rows.shape[0]
    return {k: v[rows] if _is_per_row(v, batch) else v for k, v in kwargs.items()}


class ClassifierFreeGuidance:
    """eps~ = (1 + w) eps(x, c) - w eps(x, null) (Ho & Salimans, eq. 6), both passes in ONE
    batched forward of 2B images (B + the active ones under an interval)."""

    def __init__(self, denoiser: Denoiser, w: float, null_label: int,
                 interval: Optional[tuple[int, int]] = None):
        self.denoiser, self.w, self.null_label, self.interval = denoiser, float(w), int(null_label), interval

    def __call__(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, **kwargs) -> DenoiserOutput:
        active = guidance_active(t, self.interval)
        n_active = int(active.sum())
        if self.w == 0 or n_active == 0:
            return as_output(self.denoiser(x, t, labels, **kwargs))
        all_active = n_active == x.shape[0]
        null = torch.full((n_active,), self.null_label, dtype=labels.dtype, device=labels.device)
        out = as_output(self.denoiser(_twice(x, active, all_active), _twice(t, active, all_active),
                                      torch.cat([labels, null]), **_kwargs_twice(kwargs, active, all_active)))
        return _extrapolate(_first_rows(out, x.shape[0]), out.eps[x.shape[0]:], active, self.w)


class AutoGuidance:
    """Autoguidance (Karras et al., 2024, eq. 2): D = D_guide + (1 + w)(D_main - D_guide),
    written in eps as eps~ = (1 + w) eps_main - w eps_guide, where the guide is a weaker
    conditional model (smaller and/or trained less) given the same labels."""

    def __init__(self, main: Denoiser, guide: Denoiser, w: float, interval: Optional[tuple[int, int]] = None):
        self.main, self.guide, self.w, self.interval = main, guide, float(w), interval

    def __call__(self, x: torch.Tensor, t: torch.Tensor, labels: Optional[torch.Tensor], **kwargs) -> DenoiserOutput:
        plain = as_output(self.main(x, t, labels, **kwargs))
        active = guidance_active(t, self.interval)
        if self.w == 0 or not bool(active.any()):
            return plain
        guide_labels = None if labels is None else labels[active]
        guide_eps = as_output(self.guide(x[active], t[active], guide_labels, **_kwargs_rows(kwargs, active))).eps
        return _extrapolate(plain, guide_eps, active, self.w)


class PerturbedAttentionGuidance:
    """Perturbed-attention guidance (Ahn et al., 2024, eq. 12-14): the guiding pass replaces
    the self-attention maps of ``layers`` (None: every layer) by the identity, PSA(Q, K, V) = V,
    and eps~ = eps + w (eps - eps_perturbed). Plain and perturbed passes share ONE forward: the
    denoiser must accept ``perturb_attention``, a bool [B] marking the rows to perturb, and
    ``perturb_layers``, the layer names (as ``NetworkDenoiser`` over ``pipeline.nets.unet.UNet``
    does; ``pipeline.nets.unet.pag_layers`` chooses them)."""

    def __init__(self, denoiser: Denoiser, w: float, interval: Optional[tuple[int, int]] = None,
                 layers: Optional[frozenset[str]] = None):
        self.denoiser, self.w, self.interval, self.layers = denoiser, float(w), interval, layers

    def __call__(self, x: torch.Tensor, t: torch.Tensor, labels: Optional[torch.Tensor], **kwargs) -> DenoiserOutput:
        active = guidance_active(t, self.interval)
        n_active = int(active.sum())
        if self.w == 0 or n_active == 0:
            return as_output(self.denoiser(x, t, labels, **kwargs))
        all_active = n_active == x.shape[0]
        perturb = torch.cat([torch.zeros(x.shape[0], dtype=torch.bool, device=x.device),
                             torch.ones(n_active, dtype=torch.bool, device=x.device)])
        both_labels = None if labels is None else _twice(labels, active, all_active)
        inner = kwargs.pop("perturb_attention", None)
        if _is_per_row(inner, x.shape[0]):  # an outer PAG already perturbs some rows: keep them perturbed
            perturb = perturb | _twice(inner, active, all_active)
        elif inner is True:
            perturb = torch.ones_like(perturb)
        if self.layers is not None:
            kwargs["perturb_layers"] = self.layers
        out = as_output(self.denoiser(_twice(x, active, all_active), _twice(t, active, all_active), both_labels,
                                      perturb_attention=perturb, **_kwargs_twice(kwargs, active, all_active)))
        return _extrapolate(_first_rows(out, x.shape[0]), out.eps[x.shape[0]:], active, self.w)


def classifier_scale_from_w(w: float, base_is_conditional: bool) -> float:
    """ADM's classifier scale s for the project's w. Guiding p(x|c) with s gives
    p(x|c) p(c|x)^s, so s = w; guiding an unconditional p(x) gives p(x) p(c|x)^s
    = p(x|c) p(c|x)^(s - 1) up to a constant, so s = 1 + w."""
    return float(w) if base_is_conditional else 1.0 + float(w)


class ClassifierGuidance:
    """Classifier guidance (Dhariwal & Nichol, 2021) with a noisy classifier
    ``classifier(x_t, t) -> logits`` (t on the original grid) and ADM's ``scale`` s
    (see :func:`classifier_scale_from_w`).

    g = s * grad_x log p_phi(y | x_t) is computed here (with autograd switched on locally, so
    the sampler may run under inference mode). ``form``:
    - "sampler" (default): g is returned as ``classifier_grad`` and each sampler applies its
      own form, as guided-diffusion does: DDPM shifts the mean by Sigma g (ADM Algorithm 1,
      ``condition_mean``), DDIM uses eps - sqrt(1 - alpha_bar_t) g on the eps of the clipped x0
      (ADM Algorithm 2 / eq. 14, ``condition_score``; see ``pipeline.diffusion.samplers``);
    - "eps": the DDIM form is folded into eps here (needs ``train_schedule`` for alpha_bar_t),
      so any sampler sees a plain eps. A sampler that clips x0 then clips the guided x0, which is
      not guided-diffusion's order: use "sampler" to reproduce ADM-G.
    """

    def __init__(self, denoiser: Denoiser, classifier: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 scale: float, interval: Optional[tuple[int, int]] = None, form: str = "sampler",
                 train_schedule: Optional[Schedule] = None):
        if form not in ("sampler", "eps"):
            raise ValueError(f"form must be 'sampler' or 'eps', got {form!r}")
        if form == "eps" and train_schedule is None:
            raise ValueError("form='eps' needs the training schedule for alpha_bar_t")
        self.denoiser, self.classifier, self.scale = denoiser, classifier, float(scale)
        self.interval, self.form, self.train_schedule = interval, form, train_schedule

    def log_prob_grad(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """grad_x log p(y | x_t) summed over the batch (each row only sees its own image)."""
        with torch.inference_mode(False), torch.enable_grad():
            x_in = x.detach().clone().requires_grad_(True)
            log_probs = torch.log_softmax(self.classifier(x_in, t.clone()), dim=-1)
            selected = log_probs.gather(1, labels.clone().long().view(-1, 1)).sum()
            (grad,) = torch.autograd.grad(selected, x_in)
        return grad.detach()

    def __call__(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, **kwargs) -> DenoiserOutput:
        plain = as_output(self.denoiser(x, t, labels, **kwargs))
        active = guidance_active(t, self.interval)
        if self.scale == 0 or not bool(active.any()):
            return plain
        grad = torch.zeros_like(x)
        grad[active] = self.scale * self.log_prob_grad(x[active], t[active], labels[active]).to(x.dtype)
        if self.form == "eps":
            sqrt_one_minus = self.train_schedule.gather("sqrt_one_minus_alphas_cumprod", t, x)
            return plain.with_eps(plain.eps - sqrt_one_minus * grad)
        previous = plain.classifier_grad
        return DenoiserOutput(eps=plain.eps, var_frac=plain.var_frac,
                              classifier_grad=grad if previous is None else previous + grad)


# ----------------------------------------------------------------------------------------------
# The registry of guidance kinds

# What a kind may need beyond the main model's conditional denoiser (GuidanceKind.needs):
UNCONDITIONAL = "unconditional"  # the main model's null-label branch: a model trained with p_uncond > 0
GUIDE = "guide"                  # autoguidance's weaker model
CLASSIFIER = "classifier"        # the noisy classifier
ATTENTION = "attention"          # the self-attention layers to perturb (sample.pag_layers)
NEEDS = (UNCONDITIONAL, GUIDE, CLASSIFIER, ATTENTION)


@dataclass(frozen=True)
class GuidanceParts:
    """What a kind's wrapper is built from; the caller fills in what the kind needs."""

    denoiser: Denoiser                          # the main model, plain (unguided)
    null_label: Optional[int] = None            # UNCONDITIONAL
    guide: Optional[Denoiser] = None            # GUIDE
    classifier: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None  # CLASSIFIER: logits(x_t, t)
    attention_layers: Optional[frozenset[str]] = None  # ATTENTION


@dataclass(frozen=True)
class GuidanceKind:
    """One way to guide.

    ``symbol`` is what tables call the strength: "w" (the classifier-free paper's weight, so the
    scale is s = 1 + w) or "s" (the strength is a scale itself, w has no meaning: ADM's
    classifier scale). ``build(parts, strength, interval)`` returns the guided denoiser."""

    name: str
    symbol: str
    strength_name: str   # the strength in words, e.g. for a plot's axis
    meaning: str         # the update, with its equation
    build: Callable[[GuidanceParts, float, Optional[tuple[int, int]]], Denoiser]
    needs: frozenset[str] = frozenset()

    def __post_init__(self):
        if self.symbol not in ("w", "s"):
            raise ValueError(f"guidance {self.name}: symbol must be 'w' or 's', got {self.symbol!r}")
        unknown = set(self.needs) - set(NEEDS)
        if unknown:
            raise ValueError(f"guidance {self.name}: unknown needs {sorted(unknown)} (known: {', '.join(NEEDS)})")

    def table(self, strength: float) -> tuple[Optional[float], float]:
        """(w, s) of ``strength`` for tables: s = 1 + w, or (None, s) for a scale."""
        if self.symbol == "s":
            return None, float(strength)
        return float(strength), 1.0 + float(strength)


GUIDANCE: dict[str, GuidanceKind] = {}


def register(kind: GuidanceKind) -> GuidanceKind:
    """Add ``kind`` to the registry (the config, the sweep, generation and the leaderboard read it)."""
    if kind.name in GUIDANCE:
        raise ValueError(f"a guidance kind named {kind.name!r} is registered already")
    GUIDANCE[kind.name] = kind
    return kind


def guidance_kind(name: str) -> GuidanceKind:
    if name not in GUIDANCE:
        raise ValueError(f"unknown guidance kind {name!r} (known: {', '.join(GUIDANCE)})")
    return GUIDANCE[name]


register(GuidanceKind(
    "none", "w", "guidance weight w", "the conditional model unguided (w = 0)",
    build=lambda parts, strength, interval: parts.denoiser))
register(GuidanceKind(
    "cfg", "w", "guidance weight w (s = 1 + w)",
    "eps~ = (1 + w) eps(x, c) - w eps(x, null) (Ho & Salimans 2021, eq. 6)",
    build=lambda parts, strength, interval: ClassifierFreeGuidance(parts.denoiser, strength, parts.null_label,
                                                                   interval),
    needs=frozenset({UNCONDITIONAL})))
register(GuidanceKind(
    "classifier", "s", "classifier scale s",
    "ADM's scale s: eps - sqrt(1 - alpha_bar) s grad log p(y | x_t) (Dhariwal & Nichol 2021, Algorithms 1-2), "
    "applied to the conditional model",
    build=lambda parts, strength, interval: ClassifierGuidance(parts.denoiser, parts.classifier, strength, interval),
    needs=frozenset({CLASSIFIER})))
register(GuidanceKind(
    "autoguidance", "w", "guidance weight w (s = 1 + w)",
    "eps~ = (1 + w) eps_main - w eps_guide (Karras et al. 2024, eq. 2, whose w is 1 + this w)",
    build=lambda parts, strength, interval: AutoGuidance(parts.denoiser, parts.guide, strength, interval),
    needs=frozenset({GUIDE})))
register(GuidanceKind(
    "pag", "w", "guidance weight w (s = 1 + w)",
    "eps~ = eps + w (eps - eps_perturbed-attention) (Ahn et al. 2024, eq. 14, whose s is this w)",
    build=lambda parts, strength, interval: PerturbedAttentionGuidance(parts.denoiser, strength, interval,
                                                                       parts.attention_layers),
    needs=frozenset({ATTENTION})))
