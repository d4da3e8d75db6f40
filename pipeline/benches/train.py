"""Training steps/s of the Ray Train loop against a plain single-process PyTorch loop.

Both train the same class-conditional UNet (DiffusionTask: classifier-free dropout, t ~ U,
L_simple) on the digits shards with the same per-worker batch, AdamW, gradient clipping and
EMA, one thread each, in the same run. The Ray side is `pipeline.training.trainer.fit` with one
worker (the loop the stages run: data stream, step seeding, loss all-reduce, history); its
steps/s comes from the loop's own timed windows after the first (so the TorchTrainer start,
the first batch and the final checkpoint are not per-step cost) and the start-up is reported
separately as `startup_s` (fit's wall time minus the time spent in steps). The plain loop is the
same code path without Ray: make_loader, task.loss, backward, clip, step, EMA update.
`ratio` = Ray steps/s / plain steps/s.
"""
from __future__ import annotations

import copy
import os
import tempfile
import time

from pipeline.training.spec import TrainSpec

# Function-local imports: they bring in torch, Ray and webdataset, which importing this module does not need.

CACHE_DIR = os.path.join(tempfile.gettempdir(), "pipeline-bench-train")
FULL = dict(base_channels=32, batch=64, kimg=19.2, warmup_steps=20)
QUICK = dict(base_channels=16, batch=32, kimg=1.6, warmup_steps=5)


def _digits_shards() -> str:
    """Digits shards (cached across runs), written by the shard stage's own library functions."""
    import pyarrow.fs as pafs
    import ray

    from pipeline.data.build import finalize, shard_in_parallel
    from pipeline.data.manifest import DATASET_FILE
    from pipeline.data.plan import plan_shards
    from pipeline.data.shardwrite import EncodeOptions
    from pipeline.data.sources import list_source

    out = os.path.join(CACHE_DIR, "digits")
    if os.path.exists(os.path.join(out, DATASET_FILE)):
        return out
    listing = list_source("digits", None, val_fraction=0.1, seed=0)
    plans = plan_shards(listing.records, 256, 0)
    options = EncodeOptions(resolution=8, num_classes=len(listing.classes))
    fs = pafs.LocalFileSystem()
    fs.create_dir(out)
    results = shard_in_parallel(ray, out, plans, None, options, num_tasks=1)
    finalize(fs, out, listing, plans, results, options, min_success_rate=1.0, source="digits")
    return out


def _task(params: dict):
    from pipeline.training.diffusion import DiffusionTask

    unet = dict(image_size=8, in_channels=3, base_channels=params["base_channels"], channel_mult=(1, 2),
                num_res_blocks=2, attention_resolutions=(4,), num_head_channels=min(32, params["base_channels"]),
                dropout=0.0, num_classes=10, resblock_updown=True)
    diffusion = {"timesteps": 1000, "schedule": "cosine", "lambda_min": -20.0, "lambda_max": 20.0, "loss": "simple"}
    return DiffusionTask(unet, diffusion, p_uncond=0.1)


def _spec(params: dict):
    return TrainSpec(kimg=params["kimg"], batch_size=params["batch"], lr=1e-3, num_workers=1, seed=0, grad_clip=1.0,
                     ema_decays=(0.99,), checkpoint_kimg=params["kimg"], log_kimg=params["batch"] * 10 / 1000)


def _plain(task, spec, data: str, warmup_steps: int) -> tuple[float, int]:
    """(steps/s after `warmup_steps`, steps timed) of the loop without Ray, one thread."""
    import torch

    from pipeline.data.loader import StreamSpec, make_loader
    from pipeline.training.loop import lr_at, update_ema
    from pipeline.training.seeding import step_generator

    torch.manual_seed(spec.seed)
    model = task.build_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay)
    ema = copy.deepcopy(model).requires_grad_(False)
    batches = iter(make_loader(data, StreamSpec(split=spec.split, batch_size=spec.per_worker_batch, seed=spec.seed)))
    steps, nimg, started = spec.total_nimg // spec.batch_size, 0, None
    model.train()
    for step in range(steps):
        if step == warmup_steps:
            started = time.perf_counter()
        images, labels = next(batches)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(spec, nimg + spec.batch_size)
        loss = task.loss(model, images, labels, step_generator(spec.seed, 0, nimg))
        float(loss)  # the Ray loop reads the loss every step too
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
        optimizer.step()
        update_ema(ema, model, spec.ema_decays[0])
        nimg += spec.batch_size
    timed = steps - warmup_steps
    return timed / (time.perf_counter() - started), timed


def _ray(task, spec, data: str) -> tuple[float, float, int]:
    """(steps/s in the loop's timed windows after the first, start-up seconds, steps timed)."""
    from pipeline.training.trainer import fit

    with tempfile.TemporaryDirectory(prefix="bench-train-") as storage:
        result = fit(task, spec, data, storage, name="bench")
    records = result.state.records
    starts = [0] + [r["nimg"] for r in records[:-1]]
    windows = [((r["nimg"] - start), (r["nimg"] - start) / r["images_per_s"]) for start, r in zip(starts, records)]
    timed = windows[1:] or windows  # the first window holds the first batch and warm-up
    images, seconds = sum(w[0] for w in timed), sum(w[1] for w in timed)
    in_steps = sum(w[1] for w in windows)
    return images / spec.batch_size / seconds, result.seconds - in_steps, images // spec.batch_size

def run(quick: bool = False) -> dict:
    import ray
    import torch

    from pipeline import cluster
    from pipeline.config import ClusterConfig

    params = QUICK if quick else FULL
    t0 = time.perf_counter()
    if not ray.is_initialized():
        cluster.connect(ClusterConfig(num_cpus=2))
    ray_init_s = time.perf_counter() - t0
    data = _digits_shards()
    task, spec = _task(params), _spec(params)

    ray_steps_per_s, startup_s, ray_steps = _ray(task, spec, data)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a Ray Train worker with one CPU
    try:
        plain_steps_per_s, plain_steps = _plain(task, spec, data, params["warmup_steps"])
    finally:
        torch.set_num_threads(threads)
    return {
        "bench": "train",
        "model": f"UNet base {params['base_channels']} on 8x8 digits",
        "per_worker_batch": spec.per_worker_batch,
        "num_workers": spec.num_workers,
        "steps_per_s_ray": round(ray_steps_per_s, 3),
        "steps_per_s_plain": round(plain_steps_per_s, 3),
        "ratio": round(ray_steps_per_s / plain_steps_per_s, 3),
        "steps_timed_ray": ray_steps,
        "steps_timed_plain": plain_steps,
        "startup_s": round(startup_s, 2),
        "ray_init_s": round(ray_init_s, 2),
    }
