"""How ``generate`` runs a denoising network: the fast path ``python -m pipeline.bench sample`` measures.

- Channels-last memory format (NHWC), the network's weights and every input. oneDNN (CPU) and
  cuDNN pick their fastest convolution kernels for it; on the bench's ADM UNet it is the larger
  part of our lead over the same network in NCHW (``images_per_s_diffusers_channels_last``).
- ``precision: bf16``: a bfloat16 copy of the network (weights rounded once; every layer,
  norms and embeddings included, computes in bf16, AMX / tensor cores for the matmuls and
  convolutions), inputs cast to bf16 and eps cast back to float32, so guidance and the sampler's
  update stay float32. Autocast instead re-casts every weight at every call and bounces
  activations between float32 and bf16 (type promotion in the residual stream and AdaGN):
  measured slower on CPU.
- Inference mode is the caller's (``generate`` samples under ``torch.inference_mode``).

fp32 keeps the math: channels-last changes only which kernels run, so an fp32 image is the
same function of (configuration, models, index) and, as before, independent of the batch it
was computed in (every call has ``net_batch`` rows; tests/generation). Its floats differ
from an NCHW evaluation in the last bits (a different kernel), which can move a uint8 level.

The prepared networks are cached on the ``Models`` (``Models.inference_net``): the fp32
network is converted to channels-last in place (same values), the bf16 copy is made once.
A ``Models`` is read-only once it has sampled: change its weights and the bf16 copy is stale.

``torch.compile`` is an option of the library, not of the stages: ``Models.compile_networks``
makes generate run compiled networks from then on. Compiled kernels round differently from
eager ones (images move by float rounding, still batch-invariant for a fixed net_batch), the
first call of each shape compiles for minutes, and on CPU it needs a C++ compiler;
``python -m pipeline.bench gpu`` measures what it buys (``sample_rows_per_s_bf16_compiled``)
before any stage adopts it.
"""
from __future__ import annotations

import copy
from typing import Optional

import torch

PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
MEMORY_FORMAT = torch.channels_last


class InferenceNet:
    """``net`` called with channels-last inputs of its dtype; returns float32.

    Attribute reads fall through to the network (``num_classes``, ``attention_layers``...)."""

    def __init__(self, net: torch.nn.Module, dtype: torch.dtype = torch.float32):
        self.net, self.dtype = net, dtype

    def __getattr__(self, name):
        if name in ("net", "dtype"):
            raise AttributeError(name)
        return getattr(self.net, name)

    def __call__(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        x = x.to(self.dtype)
        if x.ndim == 4:
            x = x.contiguous(memory_format=MEMORY_FORMAT)
        return self.net(x, *args, **kwargs).float()


def prepare(net: torch.nn.Module, precision: str, in_place: bool = True) -> InferenceNet:
    """``net`` ready for sampling at ``precision`` ("fp32" or "bf16"): channels-last, in that
    dtype. fp32 converts ``net`` itself when ``in_place`` (its values do not change), bf16
    always works on a copy."""
    if precision not in PRECISION_DTYPES:
        raise ValueError(f"precision {precision!r}: expected one of {tuple(PRECISION_DTYPES)}")
    dtype = PRECISION_DTYPES[precision]
    if dtype != torch.float32 or not in_place:
        net = copy.deepcopy(net)
    net = net.to(dtype=dtype).to(memory_format=MEMORY_FORMAT)
    return InferenceNet(net.eval(), dtype)


def compiled(fast: InferenceNet, **compile_options) -> InferenceNet:
    """The same prepared network under ``torch.compile`` (options passed through)."""
    return InferenceNet(torch.compile(fast.net, **compile_options), fast.dtype)


class InferenceCache:
    """Prepared networks by (role, precision), built on first use (``Models.inference_net``)."""

    def __init__(self):
        self._nets: dict[tuple[str, str], InferenceNet] = {}

    def compile(self, role: str, net: Optional[torch.nn.Module], precision: str, **compile_options) -> None:
        """From now on ``get(role, net, precision)`` returns the compiled network."""
        fast = self.get(role, net, precision)
        if fast is not None and not hasattr(fast.net, "_orig_mod"):
            self._nets[(role, precision)] = compiled(fast, **compile_options)

    def get(self, role: str, net: Optional[torch.nn.Module], precision: str) -> Optional[InferenceNet]:
        if net is None:
            return None
        key = (role, precision)
        if key not in self._nets:
            self._nets[key] = prepare(net, precision)
        return self._nets[key]
