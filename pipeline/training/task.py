"""What the generic loop trains. A Task is shipped to every worker (it must pickle), so it holds
only plain settings; the model is built on the worker."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Task:
    def build_model(self) -> nn.Module:
        """A fresh model; the loop seeds torch before calling it, so every rank builds the same one."""
        raise NotImplementedError

    def loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             generator: torch.Generator) -> torch.Tensor:
        """The mean loss of one worker's batch. All randomness must come from `generator`."""
        raise NotImplementedError

    def step_metrics(self) -> dict[str, tuple[float, float]]:
        """Extra scalars of the step just taken, as name -> (sum, count) over the global batch
        (the same on every rank). The loop sums them over each log window and records
        sum / count, e.g. the loss per quartile of t. Default: none."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Extra state to checkpoint beside the model (e.g. an importance sampler's history)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
