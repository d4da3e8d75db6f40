"""The `sample` benchmark: classifier-free-guided sampling throughput, ours against a naive loop.

Both run the same UNet, batch, DDPM sampler, steps, seeds and guidance weight, in the same
process, interleaved, and must produce the same images (checked). They differ only in how the
guided denoiser is evaluated:
- ours: the conditional and unconditional passes in ONE batched forward of 2B images
  (``ClassifierFreeGuidance``), under ``torch.inference_mode``, model and activations in
  channels-last memory format (oneDNN's preferred layout for convolutions on CPU);
- naive: two separate forwards of B images each, under autograd (no inference mode / no_grad),
  default NCHW layout.
``images_per_s_ours_without_channels_last`` is an ablation (ours in NCHW) so every run shows
what the layout change buys on the machine at hand.
Where the CPU has native bf16 (AMX / AVX512-BF16; ``torch.ops.mkldnn._is_mkldnn_bf16_supported``)
ours also runs with ``precision: bf16`` (the network under bf16 autocast, eps and the sampler in
float32: what ``sample.precision: bf16`` does in the pipeline). ``ratio_fp32`` compares like with
like; ``ratio_bf16`` and ``max_abs_diff_bf16_vs_naive`` show what bf16 buys and costs; ``ratio`` is
the better of the two, named by ``ratio_precision``.
Timing: the best of ``reps`` interleaved repetitions per method (the machine may be shared, and
the minimum is the least-disturbed estimate).
"""

from __future__ import annotations

import math
import time

import torch

from pipeline.diffusion.denoiser import DenoiserOutput, NetworkDenoiser
from pipeline.diffusion.guidance import ClassifierFreeGuidance
from pipeline.diffusion.samplers import sample_ddpm
from pipeline.diffusion.schedules import make_schedule, respaced
from pipeline.diffusion.seeding import trial_noise
from pipeline.nets.flops import forward_gflops_per_image
from pipeline.nets.unet import UNet

# A realistic small ADM configuration at 32 px (~8M parameters, ~3.6 GFLOPs per forward).
FULL = dict(model=dict(image_size=32, in_channels=3, base_channels=64, channel_mult=(1, 2, 2), num_res_blocks=2,
                       attention_resolutions=(16, 8), num_head_channels=64, num_classes=10, learn_sigma=True,
                       resblock_updown=True),
            batch=8, steps=8, reps=2, matmul_size=2048)
QUICK = dict(model=dict(image_size=16, in_channels=3, base_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                        attention_resolutions=(8,), num_head_channels=32, num_classes=10, learn_sigma=True,
                        resblock_updown=True),
             batch=4, steps=3, reps=1, matmul_size=512)
GUIDANCE_WEIGHT = 1.5  # w; scale s = 1 + w = 2.5
TRIAL_SEED = 0


def _nonzero_init_(model: torch.nn.Module) -> torch.nn.Module:
    """ADM zero-initializes output layers; give them small weights so the timed work is a trained
    model's (no all-zero activations)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim > 1 and not bool(parameter.any()):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
    return model


class NaiveCFG:
    """Two separate forwards per step (conditional, then unconditional), no batching."""

    def __init__(self, net: UNet, w: float):
        self.net, self.w = net, w

    def __call__(self, x, t, labels):
        conditional = self.net(x, t, labels)
        unconditional = self.net(x, t, torch.full_like(labels, self.net.null_label))
        eps_c, raw = conditional.chunk(2, dim=1)
        eps_u = unconditional.chunk(2, dim=1)[0]
        return DenoiserOutput(eps=(1 + self.w) * eps_c - self.w * eps_u, var_frac=(raw + 1) / 2)


def _matmul_gflops_per_s(size: int, reps: int = 10, dtype: torch.dtype = torch.float32) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    best = math.inf
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9


def run(quick: bool = False) -> dict:
    """Run the benchmark; returns a flat dict of numbers (see the module docstring)."""
    setup = QUICK if quick else FULL
    batch, steps = setup["batch"], setup["steps"]
    torch.manual_seed(0)
    net = _nonzero_init_(UNet(**setup["model"])).eval()
    net_channels_last = UNet(**setup["model"]).eval()
    net_channels_last.load_state_dict(net.state_dict())
    net_channels_last = net_channels_last.to(memory_format=torch.channels_last)

    size, null = net.image_size, net.null_label
    schedule = respaced(make_schedule("cosine", 1000), str(steps))
    labels = torch.arange(batch) % net.num_classes
    ours_denoiser = ClassifierFreeGuidance(NetworkDenoiser(net_channels_last, learned_sigma=True),
                                          GUIDANCE_WEIGHT, null)
    naive_denoiser = NaiveCFG(net, GUIDANCE_WEIGHT)

    ours_nchw_denoiser = ClassifierFreeGuidance(NetworkDenoiser(net, learned_sigma=True), GUIDANCE_WEIGHT, null)
    with_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    ours_bf16_denoiser = ClassifierFreeGuidance(
        NetworkDenoiser(net, learned_sigma=True, autocast_dtype=torch.bfloat16), GUIDANCE_WEIGHT, null)

    def ours():
        x_T, generators = trial_noise(TRIAL_SEED, range(batch), (3, size, size))
        with torch.inference_mode():
            return sample_ddpm(ours_denoiser, x_T.contiguous(memory_format=torch.channels_last), schedule, labels,
                               generators=generators)

    def ours_nchw():  # ablation: the same without channels-last, to show what that layout buys
        x_T, generators = trial_noise(TRIAL_SEED, range(batch), (3, size, size))
        with torch.inference_mode():
            return sample_ddpm(ours_nchw_denoiser, x_T, schedule, labels, generators=generators)

    def ours_bf16():
        x_T, generators = trial_noise(TRIAL_SEED, range(batch), (3, size, size))
        with torch.inference_mode():
            return sample_ddpm(ours_bf16_denoiser, x_T, schedule, labels, generators=generators)

    def naive():
        x_T, generators = trial_noise(TRIAL_SEED, range(batch), (3, size, size))
        return sample_ddpm(naive_denoiser, x_T, schedule, labels, generators=generators)

    # warm-up (oneDNN primitive caches, allocator) with the first images compared
    images_ours, images_naive = ours(), naive().detach()
    max_abs_diff = float((images_ours - images_naive).abs().max())

    ours_nchw()
    methods = [("ours", ours), ("naive", naive), ("ours_nchw", ours_nchw)]
    max_abs_diff_bf16 = mean_abs_diff_bf16 = None
    if with_bf16:
        bf16_difference = (ours_bf16() - images_naive).abs()
        max_abs_diff_bf16, mean_abs_diff_bf16 = float(bf16_difference.max()), float(bf16_difference.mean())
        methods.append(("ours_bf16", ours_bf16))
    best = {name: math.inf for name, _ in methods}
    for _ in range(setup["reps"]):
        for name, fn in methods:
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)

    probe = torch.randn(2, 3, size, size)
    forward_gflops = forward_gflops_per_image(net, probe, torch.full((2,), 500), torch.zeros(2, dtype=torch.long))
    passes_per_step = 2  # conditional + unconditional
    gflops_per_image = forward_gflops * passes_per_step * steps
    images_per_s_naive = batch / best["naive"]
    ratios = {"fp32": best["naive"] / best["ours"]}
    if with_bf16:
        ratios["bf16"] = best["naive"] / best["ours_bf16"]
    precision = max(ratios, key=ratios.get)
    images_per_s_ours = batch / best["ours" if precision == "fp32" else "ours_bf16"]
    return {
        "images_per_s_ours": images_per_s_ours,
        "images_per_s_naive": images_per_s_naive,
        "ratio": ratios[precision],
        "ratio_precision": precision,
        "ratio_fp32": ratios["fp32"],
        "ratio_bf16": ratios.get("bf16"),
        "images_per_s_ours_fp32": batch / best["ours"],
        "gflops_per_image": gflops_per_image,  # model forward GFLOPs x 2 passes per step x steps
        "forward_gflops_per_image": forward_gflops,
        "achieved_gflops_per_s": gflops_per_image * images_per_s_ours,
        "images_per_s_ours_without_channels_last": batch / best["ours_nchw"],
        "machine_matmul_gflops_per_s": _matmul_gflops_per_s(setup["matmul_size"]),
        "machine_matmul_gflops_per_s_bf16": (_matmul_gflops_per_s(setup["matmul_size"], dtype=torch.bfloat16)
                                             if with_bf16 else None),
        "batch": batch,
        "steps": steps,
        "passes_per_step": passes_per_step,
        "image_size": size,
        "threads": torch.get_num_threads(),
        "max_abs_diff_vs_naive": max_abs_diff,
        # images in [-1, 1]; None without native bf16. An untrained network amplifies rounding
        # (x0 = (x - sqrt(1 - a) eps) / sqrt(a) at a ~ 0, then clipped), so the max is large here;
        # tests/generation compare bf16 with fp32 images of a trained model.
        "max_abs_diff_bf16_vs_naive": max_abs_diff_bf16,
        "mean_abs_diff_bf16_vs_naive": mean_abs_diff_bf16,
    }
