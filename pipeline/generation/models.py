"""The trained networks a trial samples with, loaded once (by a worker) from the store."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from pipeline.generation.trial import SamplerTrial
from pipeline.nets.classifier import NoisyClassifier
from pipeline.weights import DiffusionModel, load_classifier, load_diffusion, load_guide


@dataclass
class Models:
    main: DiffusionModel
    guide: Optional[DiffusionModel] = None          # autoguidance's weaker model
    classifier: Optional[NoisyClassifier] = None    # noisy classifier for classifier guidance

    @property
    def device(self) -> torch.device:
        first = next(self.main.net.parameters(), None)
        return first.device if first is not None else torch.device("cpu")


def load_models(trial: SamplerTrial, diffusion_location: str, classifier_location: Optional[str] = None,
                device: str | torch.device = "cpu") -> Models:
    """Load what ``trial``'s guidance needs: the main model of a train_diffusion output, its
    guide/ for autoguidance, the train_classifier output for classifier guidance."""
    main = load_diffusion(diffusion_location, device)
    if main.p_uncond is not None and abs(float(main.p_uncond) - trial.p_uncond) > 1e-9:
        raise ValueError(f"{diffusion_location} was trained with p_uncond={main.p_uncond}, "
                         f"the trial asks for p_uncond={trial.p_uncond}")
    if not main.num_classes:
        raise ValueError(f"{diffusion_location}: an unconditional model; the trials sample class-conditionally")
    guide = load_guide(diffusion_location, device) if trial.guidance == "autoguidance" else None
    classifier = None
    if trial.guidance == "classifier":
        if classifier_location is None:
            raise ValueError("classifier guidance needs the train_classifier output (classifier_location)")
        classifier = load_classifier(classifier_location, device)
    return Models(main=main, guide=guide, classifier=classifier)
