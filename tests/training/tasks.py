"""Tasks for tests; importable on Ray workers (the repository root is on their PYTHONPATH)."""
from dataclasses import dataclass, field

import torch

from pipeline.training.evalnet import EvalnetTask


@dataclass(frozen=True)
class NanOnRankAfterSteps(EvalnetTask):
    """EvalNet whose loss turns NaN on one rank at its `bad_step`-th step (1-based)."""

    bad_rank: int = 1
    bad_step: int = 1
    steps: list = field(default_factory=list)  # calls on this worker (the list itself is mutable)

    def loss(self, model, images, labels, generator):
        loss = super().loss(model, images, labels, generator)
        self.steps.append(1)
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        if rank == self.bad_rank and len(self.steps) >= self.bad_step:
            return loss * float("nan")
        return loss
