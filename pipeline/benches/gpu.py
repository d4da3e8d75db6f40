"""The `gpu` benchmark: per-device throughput of the configs/imagenet64.yaml networks on CUDA.

Without a CUDA device it returns ``{"skipped": reason}`` and ``python -m pipeline.bench gpu``
prints that one line and exits 0. On a GPU (device 0), every figure timed between
``torch.cuda.synchronize()`` calls, after a warm-up run, best of ``reps``:

- sampling through the pipeline's own path (``pipeline.generation.generate``: CFG, DDIM,
  ``net_batch`` rows per network call, channels-last, inference mode) with the ADM-64 UNet
  (~296M parameters) at fp32, bf16, and bf16 under ``torch.compile``
  (``Models.compile_networks``; skipped with --quick): ``sample_rows_per_s_<p>`` (network rows
  per second, the capacity figure: a configuration's images/s is that divided by its
  ``nfe_per_image``), ``sample_images_per_s_<p>`` for the bench's trial, achieved TFLOP/s and
  its fraction of the device's spec-sheet dense peak (``PEAK_TFLOPS``) and of this device's
  measured square-matmul rate in that dtype;
- the noisy classifier's gradient (classifier guidance: forward + backward of d log p(y|x)/dx,
  float32 as generate runs it): ``classifier_grad_rows_per_s``;
- training the ADM-64 UNet (DiffusionTask.loss, hybrid loss, AdamW, gradient clipping), one
  GPU, ``train_batch`` images per step, fp32 and bf16 autocast: ``train_images_per_s_<p>``,
  with ``train_vs_adm_v100`` = bf16 images/s / 74 (ADM's reported 74 images/s per V100 at
  64 px for its optimised fp16 setup, Dhariwal & Nichol 2021, Table 7);
- clean-fid's Inception: ``inception_images_per_s`` for the evaluate stage's extractor (per
  image PIL resize to 299 on the CPU, then the network) and ``inception_network_images_per_s``
  for the network alone; a note instead when the weights are not on the machine.

The returned dict is the device's throughput record (``device``, ``torch``, ``cuda``, the
figures above): a capacity plan reads ``sample_rows_per_s_<precision>``,
``classifier_grad_rows_per_s``, ``train_images_per_s_<precision>`` and
``inception_images_per_s`` from it.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from pipeline.nets.classifier import NoisyClassifier
from pipeline.nets.flops import forward_gflops_per_image
from pipeline.nets.unet import UNet

# Function-local imports: they bring in SciPy, which importing this module does not need.

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "imagenet64.yaml"  # the repository's
NUM_CLASSES = 1000
ADM_V100_TRAIN_IMAGES_PER_S = 74.0
# Dense (no sparsity) spec-sheet peaks in TFLOP/s: fp32 on CUDA cores, bf16 on tensor cores.
PEAK_TFLOPS = {"H200": {"fp32": 67.0, "bf16": 989.0}, "H100 PCIe": {"fp32": 51.0, "bf16": 756.0},
               "H100": {"fp32": 67.0, "bf16": 989.0}, "A100": {"fp32": 19.5, "bf16": 312.0},
               "L40S": {"fp32": 91.6, "bf16": 362.0}, "L4": {"fp32": 30.3, "bf16": 121.0},
               "V100": {"fp32": 15.7, "bf16": None}}
FULL = dict(steps=10, reps=3, train_batch=64, train_steps=10, classifier_batch=256, inception_images=2000,
            inception_batch=500, matmul_size=8192, compile=True)
QUICK = dict(steps=2, reps=1, train_batch=16, train_steps=2, classifier_batch=32, inception_images=100,
             inception_batch=50, matmul_size=2048, compile=False)


def spec_peak(device_name: str) -> Optional[dict]:
    """The spec-sheet peaks of a device by its CUDA name (the first key it contains), or None."""
    for key, peaks in PEAK_TFLOPS.items():
        if key in device_name:
            return peaks
    return None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(fn: Callable[[], object], device: torch.device, reps: int) -> float:
    """The fastest of ``reps`` synchronised runs of ``fn`` after one warm-up run."""
    fn()
    best = math.inf
    for _ in range(reps):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def matmul_tflops(device: torch.device, dtype: torch.dtype, size: int) -> float:
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    return 2 * size ** 3 / best_seconds(lambda: a @ b, device, 5) / 1e12


def imagenet64_networks() -> dict:
    """(UNet, classifier) constructor arguments and the diffusion section of configs/imagenet64.yaml."""
    from pipeline.config import load_config
    from pipeline.training.networks import (
        classifier_kwargs,
        diffusion_dict,
        unet_kwargs,
    )

    cfg = load_config(CONFIG, [f"data.path={CONFIG.parent}"])  # the data path is a placeholder there
    resolution = cfg.data.resolution
    diffusion = diffusion_dict(cfg.diffusion)
    return dict(unet=unet_kwargs(cfg.model, resolution, NUM_CLASSES),
                classifier=classifier_kwargs(cfg.classifier, resolution, NUM_CLASSES), diffusion=diffusion,
                inception_weights=cfg.eval.inception_weights)


def bench_sampling(device: torch.device, networks: dict, setup: dict, peak: Optional[dict],
                   matmul: dict[str, float]) -> dict:
    from pipeline.generation import Models, SamplerConfig, generate, resolve_net_batch
    from pipeline.weights import DiffusionModel, schedule_from

    torch.manual_seed(0)
    net = UNet(**networks["unet"]).to(device).eval()
    size = net.image_size
    probe = torch.randn(2, 3, size, size, device=device)
    forward_gflops = forward_gflops_per_image(net, probe, torch.full((2,), 500, device=device),
                                              torch.zeros(2, dtype=torch.long, device=device))
    models = Models(main=DiffusionModel(net, schedule_from(networks["diffusion"])))
    net_batch = setup.get("net_batch") or resolve_net_batch(None, device.type)
    images = max(1, net_batch // 2)  # CFG: conditional + unconditional rows fill one network call per step
    figures = {"net_batch": net_batch, "sample_images": images, "sample_steps": setup["steps"],
               "unet_forward_gflops_per_image": forward_gflops,
               "unet_parameters_m": sum(p.numel() for p in net.parameters()) / 1e6}
    runs = [("fp32", "fp32", False), ("bf16", "bf16", False)]
    if setup["compile"]:
        runs.append(("bf16_compiled", "bf16", True))
    for name, precision, compile_it in runs:
        config = SamplerConfig(guidance="cfg", strength=1.0, sampler="ddim", steps=setup["steps"],
                               net_batch=net_batch, precision=precision)
        if compile_it:
            models.compile_networks(precision)
        seconds = best_seconds(lambda: generate(config, models, range(images), batch_size=images), device,
                               setup["reps"])
        rows_per_s = 2 * images * setup["steps"] / seconds
        tflops = rows_per_s * forward_gflops / 1e3
        figures[f"sample_images_per_s_{name}"] = images / seconds
        figures[f"sample_rows_per_s_{name}"] = rows_per_s
        figures[f"sample_tflops_{name}"] = tflops
        figures[f"sample_fraction_of_matmul_{name}"] = tflops / matmul[precision]
        spec = (peak or {}).get(precision)
        figures[f"sample_fraction_of_peak_{name}"] = tflops / spec if spec else None
    return figures


def bench_classifier(device: torch.device, networks: dict, setup: dict) -> dict:
    torch.manual_seed(0)
    classifier = NoisyClassifier(**networks["classifier"]).to(device).eval()
    n, size = setup["classifier_batch"], networks["classifier"]["image_size"]
    x = torch.randn(n, 3, size, size, device=device)
    t = torch.randint(0, 1000, (n,), device=device)
    y = torch.randint(0, NUM_CLASSES, (n,), device=device)

    def gradient():
        x_in = x.detach().requires_grad_(True)
        log_p = torch.log_softmax(classifier(x_in, t), dim=-1)[torch.arange(n, device=device), y]
        return torch.autograd.grad(log_p.sum(), x_in)[0]

    return {"classifier_grad_rows_per_s": n / best_seconds(gradient, device, setup["reps"])}


def _train_images_per_s(task, device: torch.device, setup: dict, precision: str) -> float:
    """Images/s of ``train_steps`` optimiser steps (DiffusionTask.loss, AdamW, clipping) at ``precision``."""
    torch.manual_seed(0)
    model = task.build_model().to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    size, batch = task.unet["image_size"], setup["train_batch"]
    images = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    labels = torch.randint(0, NUM_CLASSES, (batch,), device=device)
    generator = torch.Generator().manual_seed(0)

    def steps():
        for _ in range(setup["train_steps"]):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = task.loss(model, images, labels, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()

    return batch * setup["train_steps"] / best_seconds(steps, device, max(1, setup["reps"] - 1))


def bench_training(device: torch.device, networks: dict, setup: dict) -> dict:
    from pipeline.training.diffusion import DiffusionTask

    task = DiffusionTask(dict(networks["unet"]), dict(networks["diffusion"]), p_uncond=0.1)
    figures = {"train_batch": setup["train_batch"]}
    for precision in ("fp32", "bf16"):
        figures[f"train_images_per_s_{precision}"] = _train_images_per_s(task, device, setup, precision)
    figures["train_vs_adm_v100"] = figures["train_images_per_s_bf16"] / ADM_V100_TRAIN_IMAGES_PER_S
    return figures


def bench_inception(device: torch.device, networks: dict, setup: dict) -> dict:
    from pipeline.metrics.inception import InceptionWeightsMissing, inception_extractor

    try:
        extractor = inception_extractor(networks["inception_weights"], device, batch_size=setup["inception_batch"])
    except InceptionWeightsMissing as exc:
        return {"inception_images_per_s": None, "inception_note": f"clean-fid's Inception not measured: {exc}"}
    size = networks["unet"]["image_size"]
    images = np.random.default_rng(0).integers(0, 256, (setup["inception_images"], size, size, 3), dtype=np.uint8)
    batch = torch.rand(setup["inception_batch"], 3, 299, 299, device=device) * 255

    def network_only():
        with torch.inference_mode():
            return extractor.network(batch)

    return {"inception_images_per_s": len(images) / best_seconds(lambda: extractor(images), device, 1),
            "inception_network_images_per_s": len(batch) / best_seconds(network_only, device, setup["reps"])}


def measure(device: torch.device, setup: dict, networks: dict) -> dict:
    """Every figure of the module docstring on ``device`` (tests run it on the CPU with tiny networks)."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = spec_peak(name) if device.type == "cuda" else None
    figures = {"device": name, "torch": torch.__version__, "cuda": torch.version.cuda,
               "peak_tflops_fp32": (peak or {}).get("fp32"), "peak_tflops_bf16": (peak or {}).get("bf16")}
    matmul = {precision: matmul_tflops(device, dtype, setup["matmul_size"])
              for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    figures.update({f"matmul_tflops_{precision}": value for precision, value in matmul.items()})
    figures.update(bench_sampling(device, networks, setup, peak, matmul))
    figures.update(bench_classifier(device, networks, setup))
    figures.update(bench_training(device, networks, setup))
    figures.update(bench_inception(device, networks, setup))
    # the headline: what bf16 buys over fp32 on this device's sampling path
    figures["ratio"] = figures["sample_images_per_s_bf16"] / figures["sample_images_per_s_fp32"]
    return figures


def run(quick: bool = False) -> dict:
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device visible to torch (torch.cuda.is_available() is false): nothing measured"}
    device = torch.device("cuda", 0)
    torch.cuda.set_device(device)
    figures = measure(device, QUICK if quick else FULL, imagenet64_networks())
    figures["quick"] = quick
    return figures
