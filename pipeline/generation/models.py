"""The trained networks a configuration samples with, loaded once (by a worker) from the store."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from pipeline.diffusion.guidance import CLASSIFIER, GUIDE
from pipeline.generation.inference import InferenceCache, InferenceNet
from pipeline.generation.sampler_config import SamplerConfig
from pipeline.nets.classifier import NoisyClassifier
from pipeline.weights import DiffusionModel, load_classifier, load_diffusion, load_guide


@dataclass
class Models:
    main: DiffusionModel
    guide: Optional[DiffusionModel] = None          # autoguidance's weaker model
    classifier: Optional[NoisyClassifier] = None    # noisy classifier for classifier guidance
    _inference: InferenceCache = field(default_factory=InferenceCache, repr=False, compare=False)

    def inference_net(self, role: str, precision: str) -> InferenceNet:
        """The ``role`` ("main" or "guide") network prepared for sampling at ``precision``
        (channels-last, bf16 copy; pipeline.generation.inference), made on first use."""
        model = {"main": self.main, "guide": self.guide}[role]
        if model is None:
            raise ValueError(f"these models have no {role} network")
        return self._inference.get(role, model.net, precision)

    def compile_networks(self, precision: str, **compile_options) -> None:
        """Make generate run this precision's denoising networks (main, and guide when loaded)
        under ``torch.compile`` (pipeline.generation.inference: an option, not the default)."""
        for role, model in (("main", self.main), ("guide", self.guide)):
            if model is not None:
                self._inference.compile(role, model.net, precision, **compile_options)

    @property
    def device(self) -> torch.device:
        first = next(self.main.net.parameters(), None)
        return first.device if first is not None else torch.device("cpu")


def load_models(config: SamplerConfig, diffusion_location: str, classifier_location: Optional[str] = None,
                device: str | torch.device = "cpu",
                cached: Optional[Callable[[tuple, Callable[[], Any]], Any]] = None) -> Models:
    """Load what ``config``'s guidance needs: the main model of a train_diffusion output, its
    guide/ for a kind that needs the guide, the train_classifier output for one that needs the
    classifier. ``cached(key, load)``: a worker's cache of networks (key: what, store location,
    device), so a worker switching configurations does not read the store again."""
    def get(what: str, location: str, load: Callable[[str, Any], Any]):
        if cached is None:
            return load(location, device)
        return cached((what, location, str(device)), lambda: load(location, device))

    main = get("diffusion", diffusion_location, load_diffusion)
    if main.p_uncond is not None and abs(float(main.p_uncond) - config.p_uncond) > 1e-9:
        raise ValueError(f"{diffusion_location} was trained with p_uncond={main.p_uncond}, "
                         f"the configuration asks for p_uncond={config.p_uncond}")
    if not main.num_classes:
        raise ValueError(f"{diffusion_location}: an unconditional model; the configurations sample class-conditionally")
    needs = config.kind.needs
    guide = get("guide", diffusion_location, load_guide) if GUIDE in needs else None
    classifier = None
    if CLASSIFIER in needs:
        if classifier_location is None:
            raise ValueError(f"{config.guidance} guidance needs the train_classifier output (classifier_location)")
        classifier = get("classifier", classifier_location, load_classifier)
    return Models(main=main, guide=guide, classifier=classifier)
