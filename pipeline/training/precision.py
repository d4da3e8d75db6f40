"""Mixed-precision training: fp32 | bf16 | fp16.

The forward pass and the loss run under `torch.autocast` in the chosen dtype; the parameters,
their gradients, the optimizer's moments and the EMA copies stay float32 (autocast casts
per-op copies of the weights), as in mixed-precision training (Micikevicius et al., 2018).
fp16's narrow exponent range needs loss scaling: the loss is multiplied by a scale before
backward, the gradients are unscaled before clipping, a step whose gradients overflowed is
skipped and the scale halved (torch.amp.GradScaler). The scaler's state goes into the
checkpoint, so a resumed fp16 run continues with the same scale. bf16 keeps float32's exponent
range and needs no scaler. fp32 is exactly the plain loop (a disabled scaler is a no-op).
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch

from pipeline.training.spec import PRECISIONS

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class MixedPrecision:
    def __init__(self, precision: str, device: torch.device):
        if precision not in AUTOCAST_DTYPES:
            raise ValueError(f"precision {precision!r}: expected one of {PRECISIONS}")
        self.precision, self.device = precision, torch.device(device)
        self.dtype = AUTOCAST_DTYPES[precision]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=precision == "fp16")

    def autocast(self):
        """The context the forward pass and the loss run in."""
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)

    def backward_and_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, parameters,
                          grad_clip: Optional[float]) -> torch.Tensor:
        """Backward, clip the (unscaled) global gradient norm, step; returns the norm before
        clipping (inf or nan where an fp16 step overflowed and was skipped)."""
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, grad_clip or math.inf)
        self.scaler.step(optimizer)
        self.scaler.update()
        return grad_norm

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler.is_enabled() else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.scaler.load_state_dict(state)
