"""The training state a checkpoint holds: model, EMA copies, optimizer, the precision and the
fp16 loss scaler, images seen, the history so far, the Ray nodes its workers ran on and the
task's extra state. No RNG state: step randomness is derived from (seed, rank, images seen).
Saved by rank 0, loaded with weights_only=True."""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from typing import Any

import torch

STATE_FILE = "state.pt"


@dataclass
class TrainState:
    nimg: int = 0
    model: dict = field(default_factory=dict)
    ema: list[dict] = field(default_factory=list)
    optimizer: dict = field(default_factory=dict)
    precision: str = "fp32"  # the autocast precision it was trained in (a resume must use the same)
    scaler: dict = field(default_factory=dict)  # torch.amp.GradScaler state (fp16), else empty
    task: dict = field(default_factory=dict)
    losses: list[list[float]] = field(default_factory=list)  # [nimg after the step, global mean loss]
    records: list[dict[str, float]] = field(default_factory=list)  # periodic: nimg, loss, images/s, lr, grad norm
    snapshots: dict[str, dict] = field(default_factory=dict)  # str(nimg) -> first EMA's weights (spec.snapshot_kimg)
    resumes: list[int] = field(default_factory=list)  # images seen at each resume from a checkpoint
    # where the workers ran: {rank, node_id, node_type, since_nimg} per rank, for the first start and each resume
    workers: list[dict[str, Any]] = field(default_factory=list)

    def save(self, directory: str) -> str:
        path = os.path.join(directory, STATE_FILE)
        torch.save(self.__dict__, path)
        return path

    @classmethod
    def load(cls, directory: str) -> "TrainState":
        with open(os.path.join(directory, STATE_FILE), "rb") as f:
            return cls.from_bytes(f.read())

    @classmethod
    def from_bytes(cls, data: bytes) -> "TrainState":
        raw: dict[str, Any] = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        return cls(**raw)
