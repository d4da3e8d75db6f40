"""FLOP counting: torch.utils.flop_counter counts matmul/conv/attention FLOPs (2 per
multiply-add); elementwise ops (norms, activations) are not counted.

Counting needs no memory and no weights: a network built on the meta device (`on_meta`) runs
its forward on meta tensors, shapes only, and the counter sees every matmul, convolution and
attention product (the bench and the capacity plan count the same way)."""

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


def input_gradient_gflops_per_image(model: torch.nn.Module, x: torch.Tensor, *inputs) -> float:
    """GFLOPs per image of d model(x, *inputs).sum() / dx: the forward and the backward through
    the activations to the input, with no weight gradients (classifier guidance's gradient).
    The weights are frozen for the count (and restored): FlopCounterMode's module hooks refuse
    torch.autograd.grad, so this calls backward."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        x = x.detach().requires_grad_(True)
        with FlopCounterMode(display=False) as counter:
            model(x, *inputs).sum().backward()
    finally:
        for p in trainable:
            p.requires_grad_(True)
    return counter.get_total_flops() / x.shape[0] / 1e9


def on_meta(build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """The module ``build()`` makes, in eval mode, with its parameters on the meta device."""
    with torch.device("meta"):
        return build().eval()
