"""FLOP counting for the bench: torch.utils.flop_counter counts matmul/conv/attention FLOPs
(2 per multiply-add); elementwise ops (norms, activations) are not counted."""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` (run under no_grad)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def forward_gflops_per_image(model: torch.nn.Module, *inputs, **kwargs) -> float:
    """GFLOPs of ``model(*inputs, **kwargs)`` divided by the batch size (the first input's dim 0)."""
    batch = inputs[0].shape[0]
    return count_flops(lambda: model(*inputs, **kwargs)) / batch / 1e9
