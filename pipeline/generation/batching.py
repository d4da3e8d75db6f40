"""Network calls of one fixed shape, so an image never depends on its batch.

On CPU (oneDNN, BLAS) and GPU (cuDNN, cuBLAS) the kernel, its blocking and so its rounding are
chosen by tensor shape: the same image evaluated in a batch of 5 and of 12 differs in the last
float bits, and a sampler's 50 steps can carry such a difference across a uint8 rounding
boundary. For a given shape, a row's result does not depend on its position or on the other
rows (tested in tests/generation). ``FixedBatch`` therefore cuts every call into micro-batches
of exactly ``size`` rows, padding the last one with copies of its first row, so each image
always goes through the same computation whatever ``batch_size``, chunking or worker count
the caller uses. The cost is the padded rows of the last micro-batch of each call.
"""
from __future__ import annotations

from typing import Callable

import torch


def _per_row(value, rows: int) -> bool:
    return isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == rows


def _pad(value: torch.Tensor, size: int) -> torch.Tensor:
    missing = size - value.shape[0]
    if missing == 0:
        return value
    return torch.cat([value, value[:1].expand(missing, *value.shape[1:])])


class FixedBatch:
    """Wraps ``fn(*args, **kwargs) -> Tensor`` whose per-row tensor arguments share their first
    dimension; calls it only with exactly ``size`` rows and returns the rows asked for."""

    def __init__(self, fn: Callable[..., torch.Tensor], size: int):
        if size < 1:
            raise ValueError("size must be >= 1")
        self.fn, self.size = fn, int(size)

    def __getattr__(self, name):  # the wrapped network's attributes (num_classes, ...)
        if name in ("fn", "size"):
            raise AttributeError(name)
        return getattr(self.fn, name)

    def __call__(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        rows = x.shape[0]
        outputs = []
        for start in range(0, rows, self.size):
            stop = min(start + self.size, rows)

            def cut(v):
                return _pad(v[start:stop], self.size) if _per_row(v, rows) else v

            out = self.fn(cut(x), *(cut(a) for a in args), **{k: cut(v) for k, v in kwargs.items()})
            outputs.append(out[: stop - start])
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)
