"""The `sample` benchmark: the pipeline's sampling path against the loops a user would pick instead.

One sweep trial's work (classifier-free guidance w = 1.5, DDIM 10 steps, eta 0, ``images``
images, the default ``net_batch`` 64) on one ADM UNet (32 px, ~8M parameters, ~3.5 GFLOPs per
image-forward), in one process, interleaved:

- ours: exactly ``pipeline.generation.generate`` for that ``SamplerConfig`` (the trial's
  precision and net_batch; ``FixedBatch``, the guidance registry, channels-last, inference mode),
  uint8 images out;
- diffusers: diffusers' ``DDIMScheduler`` loop, batched CFG, ``torch.no_grad``, the network as
  loaded (NCHW) (``pipeline/benches/_sample_peers.py``);
- guided_diffusion: guided-diffusion's DDIM loop with CFG as two forwards, ``torch.no_grad``;
- diffusers_channels_last: the diffusers loop on a channels-last copy of the network
  (an ablation: what the memory format alone buys).

``ratio`` = ours / diffusers in images per second, both fp32, after checking that they make the
same images: at least ``AGREEMENT`` of the uint8 pixels within ``LEVEL_TOLERANCE`` level of
each fp32 peer's, or the bench fails. Equivalent formulas round differently in the last float
bits (CFG as (1 + w) c - w u or u + s (c - u), float64 or float32 schedule tables, NCHW or NHWC
kernels), and the untrained bench network amplifies that at a few pixels: in one full run 2 of
98,304 pixels were 2-4 levels apart, the same between the two peers as between ours and each.
Where the CPU has native bf16 (AMX / AVX512-BF16), ours also runs the trial with
``precision: bf16`` and diffusers with a bf16 network: ``ratio_bf16`` = ours bf16 / diffusers
fp32 (what switching precision buys a user of the pipeline), ``ratio_bf16_vs_diffusers_bf16``
compares like precisions, and ``bf16_*_level_diff`` say how far bf16 moves the images from
fp32. bf16 is never folded into ``ratio``.
``achieved_gflops_per_s_*`` = matmul/conv/attention FLOPs of the work (torch's FLOP counter) per
second; ``fraction_of_matmul_peak_*`` divides by this machine's measured square-matmul rate
in that dtype (same threads).
Timing: the first run of each method is warm-up and gives the images; then ``reps``
interleaved repetitions, the best of each method (the least-disturbed estimate on a shared
machine). A loaded machine moves every figure: time it alone.
"""
from __future__ import annotations

import copy
import math
import time
from typing import Callable

import numpy as np
import torch

from pipeline.benches._sample_peers import diffusers_ddim, guided_diffusion_ddim
from pipeline.diffusion.schedules import make_schedule
from pipeline.diffusion.seeding import trial_noise
from pipeline.generation.generate import generate, sampling_schedule, to_uint8
from pipeline.generation.labels import labels_for
from pipeline.generation.models import Models
from pipeline.generation.sampler_config import SamplerConfig, native_bf16_cpu
from pipeline.nets.flops import forward_gflops_per_image
from pipeline.nets.unet import UNet
from pipeline.weights import DiffusionModel

FULL = dict(model=dict(image_size=32, in_channels=3, base_channels=64, channel_mult=(1, 2, 2), num_res_blocks=2,
                       attention_resolutions=(16, 8), num_head_channels=64, num_classes=10, learn_sigma=True,
                       resblock_updown=True),
            images=32, net_batch=64, steps=10, reps=2, matmul_size=2048)
QUICK = dict(model=dict(image_size=16, in_channels=3, base_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                        attention_resolutions=(8,), num_head_channels=32, num_classes=10, learn_sigma=True,
                        resblock_updown=True),
             images=4, net_batch=8, steps=3, reps=1, matmul_size=512, threads=1)
GUIDANCE_WEIGHT = 1.5  # w; scale s = 1 + w = 2.5
LEVEL_TOLERANCE = 1    # uint8 levels between ours and each fp32 peer ...
AGREEMENT = 0.999      # ... on at least this fraction of the pixels


def _nonzero_init_(model: torch.nn.Module) -> torch.nn.Module:
    """ADM zero-initializes output layers; give them small weights so the timed work is a trained
    model's (no all-zero activations)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim > 1 and not bool(parameter.any()):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
    return model


def matmul_gflops_per_s(size: int, reps: int = 10, dtype: torch.dtype = torch.float32) -> float:
    """The best rate of a square ``size`` matmul in ``dtype`` on this machine, GFLOP/s."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b
    best = math.inf
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9


def _level_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    """The fraction of pixel values of ``a`` within ``LEVEL_TOLERANCE`` of ``b``'s."""
    return float((_level_diff(a, b) <= LEVEL_TOLERANCE).mean())


def _methods(setup: dict, bf16: bool) -> tuple[dict[str, Callable[[], np.ndarray]], float]:
    """name -> a call making the trial's uint8 images; and forward GFLOPs per image."""
    torch.manual_seed(0)
    net = _nonzero_init_(UNet(**setup["model"])).eval()
    peer_net = copy.deepcopy(net)  # generate converts its Models' network in place: peers get their own
    peer_net_channels_last = copy.deepcopy(net).to(memory_format=torch.channels_last)
    peer_net_bf16 = copy.deepcopy(net).to(torch.bfloat16)
    models = Models(main=DiffusionModel(net, make_schedule("cosine", 1000)))
    n, size = setup["images"], net.image_size
    trial = dict(guidance="cfg", strength=GUIDANCE_WEIGHT, sampler="ddim", steps=setup["steps"], eta=0.0,
                 net_batch=setup["net_batch"], seed=0)
    config = SamplerConfig(**trial)
    config_bf16 = SamplerConfig(**trial, precision="bf16")
    schedule = sampling_schedule(config, models)
    labels = labels_for(config, range(n), net.num_classes)
    null = net.null_label

    def x_T():
        return trial_noise(config.seed, range(n), (net.in_channels, size, size))[0]

    def channels_last(x):
        return x.contiguous(memory_format=torch.channels_last)

    methods = {
        "ours": lambda: generate(config, models, range(n), batch_size=n)[0],
        "diffusers": lambda: to_uint8(diffusers_ddim(peer_net, schedule, x_T(), labels, null, GUIDANCE_WEIGHT)),
        "guided_diffusion": lambda: to_uint8(guided_diffusion_ddim(peer_net, schedule, x_T(), labels, null,
                                                                   GUIDANCE_WEIGHT)),
        "diffusers_channels_last": lambda: to_uint8(diffusers_ddim(
            lambda x, t, y: peer_net_channels_last(channels_last(x), t, y), schedule, x_T(), labels, null,
            GUIDANCE_WEIGHT)),
    }
    if bf16:
        methods["ours_bf16"] = lambda: generate(config_bf16, models, range(n), batch_size=n)[0]
        methods["diffusers_bf16"] = lambda: to_uint8(diffusers_ddim(peer_net_bf16, schedule, x_T(), labels, null,
                                                                    GUIDANCE_WEIGHT, dtype=torch.bfloat16))
    probe = torch.randn(2, net.in_channels, size, size)
    gflops = forward_gflops_per_image(peer_net, probe, torch.full((2,), 500), torch.zeros(2, dtype=torch.long))
    return methods, gflops


def run(quick: bool = False) -> dict:
    """Run the benchmark; returns a flat dict of figures (see the module docstring)."""
    setup = QUICK if quick else FULL
    threads = torch.get_num_threads()
    torch.set_num_threads(setup.get("threads", threads))  # quick: one thread, quick even on a busy machine
    try:
        return _run(setup, quick)
    finally:
        torch.set_num_threads(threads)


def _run(setup: dict, quick: bool) -> dict:
    bf16 = native_bf16_cpu()
    methods, forward_gflops = _methods(setup, bf16)
    images = {name: fn() for name, fn in methods.items()}  # warm-up, and the images compared
    for peer in ("diffusers", "guided_diffusion", "diffusers_channels_last"):
        agreement = _agreement(images["ours"], images[peer])
        if agreement < AGREEMENT:
            raise AssertionError(f"ours and {peer} made different images (only {agreement:.2%} of the pixels within "
                                 f"{LEVEL_TOLERANCE} uint8 level, {AGREEMENT:.1%} needed): the comparison would not "
                                 f"be of the same work")
    best = {name: math.inf for name in methods}
    for _ in range(setup["reps"]):
        for name, fn in methods.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    n, steps = setup["images"], setup["steps"]
    rate = {name: n / seconds for name, seconds in best.items()}
    gflops_per_image = forward_gflops * 2 * steps  # conditional + unconditional pass per step
    peak_fp32 = matmul_gflops_per_s(setup["matmul_size"])
    figures = {
        "ratio": rate["ours"] / rate["diffusers"],
        "ratio_vs_guided_diffusion": rate["ours"] / rate["guided_diffusion"],
        "ratio_vs_diffusers_channels_last": rate["ours"] / rate["diffusers_channels_last"],
        **{f"images_per_s_{name}": value for name, value in rate.items()},
        "max_level_diff_vs_diffusers": int(_level_diff(images["ours"], images["diffusers"]).max()),
        "pixels_differing_vs_diffusers": float((_level_diff(images["ours"], images["diffusers"]) > 0).mean()),
        "max_level_diff_vs_guided_diffusion": int(_level_diff(images["ours"], images["guided_diffusion"]).max()),
        "agreement_vs_diffusers": _agreement(images["ours"], images["diffusers"]),
        "agreement_vs_guided_diffusion": _agreement(images["ours"], images["guided_diffusion"]),
        "level_tolerance": LEVEL_TOLERANCE,
        "agreement_needed": AGREEMENT,
        "forward_gflops_per_image": forward_gflops,
        "gflops_per_image": gflops_per_image,
        "achieved_gflops_per_s_fp32": gflops_per_image * rate["ours"],
        "machine_matmul_gflops_per_s_fp32": peak_fp32,
        "fraction_of_matmul_peak_fp32": gflops_per_image * rate["ours"] / peak_fp32,
        "native_bf16": bf16,
    }
    if bf16:
        peak_bf16 = matmul_gflops_per_s(setup["matmul_size"], dtype=torch.bfloat16)
        moved = _level_diff(images["ours_bf16"], images["ours"])
        figures.update({
            "ratio_bf16": rate["ours_bf16"] / rate["diffusers"],
            "ratio_bf16_vs_diffusers_bf16": rate["ours_bf16"] / rate["diffusers_bf16"],
            "bf16_max_level_diff": int(moved.max()),
            "bf16_mean_level_diff": float(moved.mean()),
            "bf16_median_level_diff": float(np.median(moved)),
            "achieved_gflops_per_s_bf16": gflops_per_image * rate["ours_bf16"],
            "machine_matmul_gflops_per_s_bf16": peak_bf16,
            "fraction_of_matmul_peak_bf16": gflops_per_image * rate["ours_bf16"] / peak_bf16,
        })
    figures.update({"images": n, "steps": steps, "net_batch": setup["net_batch"],
                    "image_size": setup["model"]["image_size"], "guidance_weight": GUIDANCE_WEIGHT,
                    "threads": torch.get_num_threads(), "quick": quick})
    return figures
