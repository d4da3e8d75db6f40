"""The trained networks on disk: what the training stages write and everything downstream reads.

Loadable with torch alone (no Ray, no MLflow), from a local path or a store URI. Both the
training side (which saves) and the generation / metrics side (which loads) import this module,
and it imports neither of them.

A diffusion model is `<dir>/model.pt` (a UNet state_dict, the EMA weights) and
`<dir>/model.json`:

    {"unet": {UNet constructor arguments}, "diffusion": {"timesteps", "schedule",
     "lambda_min", "lambda_max", "loss"}, "p_uncond": float, "ema_decay": float | null,
     "nimg": int, "role": "main" | "guide"}

The autoguidance guide of a train_diffusion output lives in its `guide/` subdirectory in the
same format. A noisy classifier is `<dir>/classifier.pt` + `<dir>/classifier.json`
({"classifier": NoisyClassifier constructor arguments, "diffusion": {...}, "nimg": int}). The
evaluation classifier is `<dir>/evalnet.pt` + `<dir>/evalnet.json` (its EvalnetArch). Weights
are read with `torch.load(weights_only=True)`.
"""
from __future__ import annotations

import io
import posixpath
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import torch

from pipeline.diffusion.schedules import Schedule, make_schedule
from pipeline.nets.classifier import NoisyClassifier
from pipeline.nets.evalnet import EvalNet
from pipeline.nets.unet import UNet
from pipeline.store import Directory

MODEL_WEIGHTS, MODEL_CONFIG = "model.pt", "model.json"
CLASSIFIER_WEIGHTS, CLASSIFIER_CONFIG = "classifier.pt", "classifier.json"
EVALNET_WEIGHTS, EVALNET_CONFIG = "evalnet.pt", "evalnet.json"
GUIDE_DIR = "guide"
SCHEDULE_NAMES = {"linear": "linear", "cosine": "cosine", "lambda": "cfg_logsnr"}  # config name -> make_schedule


def schedule_from(diffusion: dict[str, Any]) -> Schedule:
    """The training noise schedule of a `diffusion` settings dict (as model.json holds it)."""
    kind = diffusion["schedule"]
    if kind not in SCHEDULE_NAMES:
        raise ValueError(f"diffusion.schedule = {kind!r}: expected one of {sorted(SCHEDULE_NAMES)}")
    kwargs = ({"lambda_min": diffusion["lambda_min"], "lambda_max": diffusion["lambda_max"]}
              if kind == "lambda" else {})
    return make_schedule(SCHEDULE_NAMES[kind], int(diffusion["timesteps"]), **kwargs)


# ----------------------------------------------------------------------------------------------
# Reading and writing


def _write(directory, name: str, state_dict: dict) -> None:
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    directory.write_bytes(name, buffer.getvalue())


def _read_json(location: str, name: str) -> dict:
    directory = Directory.at(location)
    if not directory.exists(name):
        raise FileNotFoundError(f"{location}: no {name}; is this the output of a training stage?")
    return directory.read_json(name)


def _read_weights(location: str, name: str, device) -> dict:
    return torch.load(io.BytesIO(Directory.at(location).read_bytes(name)), map_location=device, weights_only=True)


@dataclass
class DiffusionModel:
    net: UNet                 # in eval mode
    schedule: Schedule        # the full training schedule (respace it for sampling)
    meta: dict[str, Any] = field(default_factory=dict)  # model.json as read

    @property
    def learned_sigma(self) -> bool:
        return bool(self.net.learn_sigma)

    @property
    def num_classes(self) -> int:
        return int(self.net.num_classes)

    @property
    def null_label(self) -> int:
        return int(self.net.null_label)

    @property
    def image_size(self) -> int:
        return int(self.net.image_size)

    @property
    def in_channels(self) -> int:
        return int(self.net.in_channels)

    @property
    def p_uncond(self) -> Optional[float]:
        return self.meta.get("p_uncond")


def save_diffusion(directory, state_dict: dict, unet_kwargs: dict[str, Any], diffusion: dict[str, Any],
                   **meta: Any) -> None:
    """Write a diffusion model into a store Directory (pipeline.store); `meta` adds p_uncond,
    ema_decay, nimg, role, ..."""
    _write(directory, MODEL_WEIGHTS, state_dict)
    directory.write_json(MODEL_CONFIG, {"unet": dict(unet_kwargs), "diffusion": dict(diffusion), **meta})


def load_diffusion(location: str, device: str | torch.device = "cpu") -> DiffusionModel:
    """A diffusion model written by `save_diffusion` (a local path or store URI)."""
    meta = _read_json(location, MODEL_CONFIG)
    net = UNet(**meta["unet"])
    net.load_state_dict(_read_weights(location, MODEL_WEIGHTS, device))
    return DiffusionModel(net=net.to(device).eval(), schedule=schedule_from(meta["diffusion"]), meta=meta)


def guide_location(location: str) -> str:
    return posixpath.join(location.rstrip("/"), GUIDE_DIR)


def load_guide(location: str, device: str | torch.device = "cpu") -> DiffusionModel:
    """The autoguidance guide stored beside the main model of a train_diffusion output."""
    return load_diffusion(guide_location(location), device)


# ----------------------------------------------------------------------------------------------
# The noisy classifier (classifier guidance)


def save_classifier(directory, state_dict: dict, classifier_kwargs: dict[str, Any], diffusion: dict[str, Any],
                    **meta: Any) -> None:
    _write(directory, CLASSIFIER_WEIGHTS, state_dict)
    directory.write_json(CLASSIFIER_CONFIG, {"classifier": dict(classifier_kwargs), "diffusion": dict(diffusion),
                                             **meta})


def load_classifier(location: str, device: str | torch.device = "cpu") -> NoisyClassifier:
    """The noisy classifier written by `save_classifier`, in eval mode: forward(x_t, t) -> logits."""
    meta = _read_json(location, CLASSIFIER_CONFIG)
    net = NoisyClassifier(**meta["classifier"])
    net.load_state_dict(_read_weights(location, CLASSIFIER_WEIGHTS, device))
    net.meta = meta
    return net.to(device).eval()


# ----------------------------------------------------------------------------------------------
# The evaluation classifier (the offline feature space)


@dataclass(frozen=True)
class EvalnetArch:
    """EvalNet's constructor arguments, as evalnet.json holds them."""

    in_channels: int
    num_classes: int
    width: int
    blocks_per_stage: tuple[int, ...]

    def build(self) -> EvalNet:
        return EvalNet(self.in_channels, self.num_classes, self.width, self.blocks_per_stage)


def save_evalnet(directory, model: EvalNet, arch: EvalnetArch) -> None:
    """Write the weights and constructor arguments into a store Directory (see pipeline.store)."""
    _write(directory, EVALNET_WEIGHTS, model.state_dict())
    directory.write_json(EVALNET_CONFIG, asdict(arch))


def load_evalnet(location: str, device: str | torch.device = "cpu") -> EvalNet:
    """The trained EvalNet (in eval mode) from a train_evalnet output: a local path or URI."""
    raw = _read_json(location, EVALNET_CONFIG)
    arch = EvalnetArch(**{**raw, "blocks_per_stage": tuple(raw["blocks_per_stage"])})
    model = arch.build()
    model.load_state_dict(_read_weights(location, EVALNET_WEIGHTS, device))
    return model.to(device).eval()
