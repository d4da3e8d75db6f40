"""Class-conditional ADM UNet on Ray Train, one model per p_uncond (classifier-free dropout).

One instance per value of train.p_uncond (fan-out), each with its own cache key. The model is
trained with the shared machinery (pipeline.training: DDP, AdamW with warm-up, clipping, EMA,
checkpoints in the partial output, exact resume) on DiffusionTask (classifier-free dropout,
uniform or importance-sampled t, L_simple or the hybrid loss). The output holds the first EMA's
weights (model.pt + model.json, load with pipeline.training.artifacts.load_diffusion) and the
autoguidance guide in guide/ (load_guide):
- train.guide.kind = smaller: the same conditional model at guide.base_channels, trained for
  guide.kimg with the same settings (its own Ray run directory, so it resumes too);
- train.guide.kind = early: the main run's first EMA as it was after guide.kimg.
To MLflow: per-step loss, loss per quartile of t, images/s, lr and gradient norm per log
window, DDIM sample grids (one row per class, w = 0) of the EMA at every sample_grid_kimg, the
final weights as artifacts and a registered model version.
"""
from pipeline.graph import StageSpec

STAGE = StageSpec(
    name="train_diffusion",
    version="1",
    reads=("model", "diffusion", "train"),
    inputs=("shard",),
    fan_out=("train.p_uncond",),
    description="Class-conditional ADM UNet on Ray Train, one model per p_uncond (classifier-free dropout).",
)

RAY_RUN, GUIDE_RUN = "ray_train", "ray_train_guide"  # Ray Train run directories inside the partial output
GRID_PER_CLASS, GRID_STEPS = 8, 50


def unet_kwargs(model, image_size: int, num_classes: int, base_channels: int | None = None) -> dict:
    """UNet constructor arguments from the `model` config section."""
    return dict(image_size=image_size, in_channels=3, base_channels=base_channels or model.base_channels,
                channel_mult=tuple(model.channel_mult), num_res_blocks=model.num_res_blocks,
                attention_resolutions=tuple(model.attention_resolutions), num_heads=model.num_heads,
                num_head_channels=model.num_head_channels if model.num_head_channels > 0 else None,
                dropout=model.dropout, num_classes=num_classes, learn_sigma=model.learn_sigma,
                resblock_updown=model.resblock_updown, use_scale_shift_norm=model.use_scale_shift_norm)


def grid_kimg(tr, kimg: float) -> tuple[float, ...]:
    """Where EMA snapshots are kept for sample grids (the final weights get one anyway)."""
    every = tr.sample_grid_kimg
    return tuple(every * i for i in range(1, int(kimg / every) + 1) if every * i < kimg)


def train_spec(tr, kimg: float | None = None, snapshot_kimg: tuple[float, ...] = ()):
    """The TrainSpec of a `train` config section (`kimg` overrides the duration, for the guide)."""
    from pipeline.training.spec import TrainSpec

    kimg = kimg if kimg is not None else tr.kimg
    return TrainSpec(kimg=kimg, batch_size=tr.batch_size, lr=tr.lr, num_workers=tr.num_workers, seed=tr.seed,
                     warmup_kimg=min(tr.warmup_kimg, kimg), weight_decay=tr.weight_decay, grad_clip=tr.grad_clip,
                     ema_decays=tuple(tr.ema_decays), checkpoint_kimg=min(tr.checkpoint_kimg, kimg),
                     keep_checkpoints=tr.keep_checkpoints, log_kimg=max(kimg / 50, tr.batch_size / 1000),
                     use_gpu=tr.use_gpu, snapshot_kimg=tuple(sorted(set(snapshot_kimg))))


def run(ctx, cfg, inputs):
    import dataclasses

    from pipeline.data.loader import ShardedDataset
    from pipeline.training.artifacts import GUIDE_DIR, diffusion_dict, save_diffusion
    from pipeline.training.diffusion import DiffusionTask
    from pipeline.training.trainer import fit

    tr, p_uncond = cfg.train, float(ctx.variant["train.p_uncond"])
    shards = inputs["shard"]
    dataset = ShardedDataset(shards.uri)
    ctx.tracker.log_dataset(shards)  # the shards as the MLflow dataset input of this run
    unet = unet_kwargs(cfg.model, dataset.resolution, dataset.num_classes)
    diffusion = diffusion_dict(cfg.diffusion)
    task = DiffusionTask(unet, diffusion, p_uncond, importance_sampling=cfg.diffusion.importance_sampling)
    early = tr.guide.kind == "early"
    if early and tr.guide.kimg >= tr.kimg:
        raise ValueError(f"train.guide.kimg = {tr.guide.kimg:g} must be below train.kimg = {tr.kimg:g} for an "
                         "early-snapshot guide")
    grids = grid_kimg(tr, tr.kimg)
    spec = train_spec(tr, snapshot_kimg=grids + ((tr.guide.kimg,) if early else ()))
    storage = ctx.out.local_path or ctx.out.uri
    ctx.log_params({"p_uncond": p_uncond, "unet": unet, "ema_decay": tr.ema_decays[0], "guide": tr.guide.kind})
    ctx.log(f"training UNet (base {unet['base_channels']}, p_uncond {p_uncond:g}) on "
            f"{dataset.num_images('train')} images for {tr.kimg:g} kimg, {tr.num_workers} worker(s)")
    result = fit(task, spec, shards.uri, storage, name=RAY_RUN)
    state = result.state
    if state.resumes:
        ctx.log(f"resumed from checkpoints at {state.resumes} images seen")
    log_history(ctx, state)

    ema, decay = state.ema[0], tr.ema_decays[0]
    meta = {"p_uncond": p_uncond, "ema_decay": decay, "nimg": state.nimg, "seed": tr.seed,
            "importance_sampling": cfg.diffusion.importance_sampling}
    save_diffusion(ctx.out, ema, unet, diffusion, role="main", **meta)

    guide_dir = ctx.out.subdir(GUIDE_DIR)
    if early:
        guide_nimg, guide_weights = snapshot_at(state, tr.guide.kimg)
        guide_unet, guide_seconds = unet, 0.0
    else:
        guide_unet = {**unet, "base_channels": tr.guide.base_channels}
        guide_task = dataclasses.replace(task, unet=guide_unet, runtime={})
        ctx.log(f"training the autoguidance guide (base {tr.guide.base_channels}) for {tr.guide.kimg:g} kimg")
        guide_result = fit(guide_task, train_spec(tr, kimg=tr.guide.kimg), shards.uri, storage, name=GUIDE_RUN)
        guide_nimg, guide_weights = guide_result.state.nimg, guide_result.state.ema[0]
        guide_seconds = guide_result.seconds
        log_history(ctx, guide_result.state, prefix="guide_")
    save_diffusion(guide_dir, guide_weights, guide_unet, diffusion, role="guide", guide_kind=tr.guide.kind,
                   **{**meta, "nimg": guide_nimg})

    grid_files = log_grids(ctx, unet, diffusion, state, grids)
    ctx.out.delete(RAY_RUN)  # checkpoints were for resuming; the output is the final weights
    ctx.out.delete(GUIDE_RUN)
    registered = log_and_register(ctx, cfg, p_uncond)
    images_per_s = [r["images_per_s"] for r in state.records]
    return {
        "p_uncond": p_uncond, "nimg": state.nimg, "final_loss": state.losses[-1][1] if state.losses else None,
        "final_loss_t_quartiles": [state.records[-1].get(f"loss_t_q{q}") for q in range(4)] if state.records else None,
        "images_per_s": sum(images_per_s) / len(images_per_s) if images_per_s else None,
        "train_seconds": round(result.seconds, 2), "guide_seconds": round(guide_seconds, 2),
        "guide_kind": tr.guide.kind, "guide_nimg": guide_nimg, "num_workers": tr.num_workers, "seed": tr.seed,
        "ema_decay": decay, "resumed_from_nimg": state.resumes, "sample_grids": grid_files,
        "registered_model": registered,
    }


def log_history(ctx, state, prefix: str = "") -> None:
    """Per-step loss, then the periodic records (loss, loss per t quartile, images/s, lr, grad norm)."""
    rows = [(int(nimg), {f"{prefix}train_loss": loss}) for nimg, loss in state.losses]
    for record in state.records:
        metrics = {("loss_mean" if k == "loss" else k): v for k, v in record.items() if k != "nimg"}
        rows.append((int(record["nimg"]), {f"{prefix}{k}": v for k, v in metrics.items()}))
    ctx.tracker.log_metric_rows(rows)


def log_grids(ctx, unet: dict, diffusion: dict, state, grids) -> list[str]:
    """DDIM grids (w = 0, one row per class) of the EMA snapshots and the final EMA, as MLflow
    artifacts (sample_grids/) and in the output (the final one as samples.png)."""
    import os
    import tempfile

    import torch

    from pipeline.nets.unet import UNet
    from pipeline.training.artifacts import schedule_from
    from pipeline.training.samples import conditional_samples, grid_labels, grid_png

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    schedule = schedule_from(diffusion)
    labels = grid_labels(unet["num_classes"], GRID_PER_CLASS)
    written = []
    tmp = tempfile.mkdtemp(prefix="grids-")
    for nimg, w in [snapshot_at(state, k) for k in grids] + [(state.nimg, state.ema[0])]:
        net = UNet(**unet)
        net.load_state_dict(w)
        png = grid_png(conditional_samples(net, schedule, labels, GRID_STEPS, seed=0), rows=unet["num_classes"])
        name = f"samples_{nimg:09d}.png"
        with open(os.path.join(tmp, name), "wb") as f:
            f.write(png)
        ctx.log_artifact(os.path.join(tmp, name), "sample_grids")
        written.append(name)
    ctx.out.write_bytes("samples.png", png)
    return written


def snapshot_at(state, kimg: float) -> tuple[int, dict]:
    """(images seen, weights) of the EMA snapshot the loop kept for `kimg` (TrainSpec.snapshot_kimg):
    the first step that reached kimg * 1000 images."""
    nimg = min(int(n) for n in state.snapshots if int(n) >= kimg * 1000)
    return nimg, state.snapshots[str(nimg)]


def log_and_register(ctx, cfg, p_uncond: float) -> str | None:
    """Log the final weights as MLflow artifacts (model/, model/guide/) and register them in the
    model registry as a new version of `<experiment>.diffusion.p_uncond_<p>`, with the run and the
    store key. Returns "name/version", or None (with a logged note) when the registry refuses."""
    import posixpath

    from pipeline.training.artifacts import GUIDE_DIR, MODEL_CONFIG, MODEL_WEIGHTS

    for rel in (MODEL_WEIGHTS, MODEL_CONFIG, f"{GUIDE_DIR}/{MODEL_WEIGHTS}", f"{GUIDE_DIR}/{MODEL_CONFIG}"):
        with ctx.out.local_file(rel) as path:
            ctx.log_artifact(path, posixpath.dirname(f"model/{rel}"))
    name = f"{cfg.tracking.experiment}.diffusion.p_uncond_{p_uncond:g}"
    try:
        registered = ctx.tracker.register_model(name, "model", {"store.key": ctx.key, "p_uncond": p_uncond},
                                                "Class-conditional ADM UNet (EMA) of train_diffusion")
        ctx.log(f"registered model {registered}")
        return registered
    except Exception as error:  # a tracking server without a registry, permissions, ...
        ctx.log(f"note: the model was not registered in the MLflow model registry ({type(error).__name__}: {error})")
        return None
