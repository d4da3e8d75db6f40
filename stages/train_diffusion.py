"""Class-conditional ADM UNet on Ray Train, one model per p_uncond (classifier-free dropout).

One instance per value of train.p_uncond (fan-out), each with its own cache key. The model is
trained with the shared machinery (pipeline.training: DDP, AdamW with warm-up, clipping, EMA,
checkpoints in the partial output, exact resume) on DiffusionTask (classifier-free dropout,
uniform or importance-sampled t, L_simple or the hybrid loss). The output holds the first EMA's
weights (model.pt + model.json, load with pipeline.weights.load_diffusion) and the
autoguidance guide in guide/ (load_guide):
- train.guide.kind = smaller: the same conditional model at guide.base_channels, trained for
  guide.kimg with the same settings (its own Ray run directory, so it resumes too);
- train.guide.kind = early: the main run's first EMA as it was after guide.kimg.
To MLflow: per-step loss, loss per quartile of t, images/s, lr and gradient norm per log
window, DDIM sample grids (one row per class, w = 0) of the EMA at every sample_grid_kimg, the
final weights as artifacts and a registered model version.
"""
import dataclasses
import os
import tempfile

from pipeline.capacity import Work, training
from pipeline.graph import StageSpec
from pipeline.training.spec import train_spec  # cheap: no torch, no Ray

# Function-local imports: they bring in torch, SciPy and webdataset, which planning (it imports every
# stage) does not need.

STAGE = StageSpec(
    name="train_diffusion",
    version="1",
    reads=("model", "diffusion", "train"),
    inputs=("shard",),
    fan_out=("train.p_uncond",),
    units=lambda cfg: train_spec(cfg.train).units,
    outputs=("model.pt", "model.json", "guide/model.pt", "guide/model.json"),
)


RAY_RUN, GUIDE_RUN = "ray_train", "ray_train_guide"  # Ray Train run directories inside the partial output
GRID_PER_CLASS, GRID_STEPS = 8, 50


def grid_kimg(tr, kimg: float) -> tuple[float, ...]:
    """Where EMA snapshots are kept for sample grids (the final weights get one anyway)."""
    every = tr.sample_grid_kimg
    return tuple(every * i for i in range(1, int(kimg / every) + 1) if every * i < kimg)


def run(ctx, cfg, inputs):
    from pipeline.data.loader import ShardedDataset
    from pipeline.training.diffusion import DiffusionTask
    from pipeline.training.networks import diffusion_dict, unet_kwargs
    from pipeline.training.stage_run import fit_in_stage, log_history, summary
    from pipeline.weights import GUIDE_DIR, save_diffusion

    tr, p_uncond = cfg.train, float(ctx.variant["train.p_uncond"])
    shards = inputs["shard"]
    dataset = ShardedDataset(shards.uri)
    ctx.tracker.log_dataset(shards)  # the shards as the MLflow dataset input of this run
    unet = unet_kwargs(cfg.model, dataset.resolution, dataset.num_classes)
    diffusion = diffusion_dict(cfg.diffusion)
    task = DiffusionTask(unet, diffusion, p_uncond, importance_sampling=cfg.diffusion.importance_sampling)
    early = tr.guide.kind == "early"  # config loading checked that guide.kimg < kimg
    grids = grid_kimg(tr, tr.kimg)
    spec = train_spec(tr, snapshot_kimg=grids + ((tr.guide.kimg,) if early else ()))
    ctx.log_params({"p_uncond": p_uncond, "unet": unet, "ema_decay": tr.ema_decays[0], "guide": tr.guide.kind})
    ctx.log(f"training UNet (base {unet['base_channels']}, p_uncond {p_uncond:g}) on "
            f"{dataset.num_images('train')} images")
    result = fit_in_stage(ctx, cfg.cluster, task, spec, shards.uri, RAY_RUN)
    state = result.state
    log_history(ctx, state)

    ema, decay = state.ema[0], tr.ema_decays[0]
    meta = {"p_uncond": p_uncond, "ema_decay": decay, "nimg": state.nimg, "seed": tr.seed,
            "importance_sampling": cfg.diffusion.importance_sampling}
    save_diffusion(ctx.out, ema, unet, diffusion, role="main", **meta)

    guide_dir = ctx.out.subdir(GUIDE_DIR)
    if early:
        guide_nimg, guide_weights = snapshot_at(state, tr.guide.kimg)
        guide_unet, guide_seconds, guide_units = unet, 0.0, state.workers
    else:
        guide_unet = unet_kwargs(cfg.model, dataset.resolution, dataset.num_classes, tr.guide.base_channels)
        guide_task = dataclasses.replace(task, unet=guide_unet, runtime={})
        ctx.log(f"training the autoguidance guide (base {tr.guide.base_channels})")
        guide_result = fit_in_stage(ctx, cfg.cluster, guide_task, train_spec(tr, kimg=tr.guide.kimg), shards.uri,
                                    GUIDE_RUN, tag_prefix="guide.")
        guide_nimg, guide_weights = guide_result.state.nimg, guide_result.state.ema[0]
        guide_seconds, guide_units = guide_result.seconds, guide_result.state.workers
        log_history(ctx, guide_result.state, prefix="guide_")
    save_diffusion(guide_dir, guide_weights, guide_unet, diffusion, role="guide", guide_kind=tr.guide.kind,
                   **{**meta, "nimg": guide_nimg})

    grid_files = log_grids(ctx, unet, diffusion, state, grids)
    ctx.out.delete(RAY_RUN)  # checkpoints were for resuming; the output is the final weights
    ctx.out.delete(GUIDE_RUN)
    registered = log_and_register(ctx, cfg, p_uncond)
    return {
        "p_uncond": p_uncond, **summary(result, spec),
        "final_loss_t_quartiles": [state.records[-1].get(f"loss_t_q{q}") for q in range(4)] if state.records else None,
        "guide_seconds": round(guide_seconds, 2), "guide_kind": tr.guide.kind, "guide_nimg": guide_nimg,
        "guide_units": guide_units,
        "ema_decay": decay, "sample_grids": grid_files, "registered_model": registered,
    }


def log_grids(ctx, unet: dict, diffusion: dict, state, grids) -> list[str]:
    """DDIM grids (w = 0, one row per class) of the EMA snapshots and the final EMA, as MLflow
    artifacts (sample_grids/) and in the output (the final one as samples.png)."""
    import torch

    from pipeline.nets.unet import UNet
    from pipeline.training.samples import class_grid_png
    from pipeline.weights import DiffusionModel, schedule_from

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    schedule = schedule_from(diffusion)
    written = []
    tmp = tempfile.mkdtemp(prefix="grids-")
    for nimg, w in [snapshot_at(state, k) for k in grids] + [(state.nimg, state.ema[0])]:
        net = UNet(**unet)
        net.load_state_dict(w)
        png = class_grid_png(DiffusionModel(net.eval(), schedule), GRID_PER_CLASS, GRID_STEPS, seed=0)
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
    model registry as a new version of `<experiment>.diffusion.p_uncond_<p>`."""
    from pipeline.training.stage_run import log_files, register
    from pipeline.weights import GUIDE_DIR, MODEL_CONFIG, MODEL_WEIGHTS

    files = [MODEL_WEIGHTS, MODEL_CONFIG, f"{GUIDE_DIR}/{MODEL_WEIGHTS}", f"{GUIDE_DIR}/{MODEL_CONFIG}"]
    log_files(ctx, files, "model")
    return register(ctx, f"{cfg.tracking.experiment}.diffusion.p_uncond_{p_uncond:g}", "model", {"p_uncond": p_uncond},
                    "Class-conditional ADM UNet (EMA) of train_diffusion")


def work(cfg, nets):
    """The UNet's training, and the smaller guide's (train.guide.kind smaller)."""
    tr = cfg.train
    parts = [training("UNet", nets.unet, tr)]
    if tr.guide.kind == "smaller":
        parts.append(training("guide", nets.guide, tr, kimg=tr.guide.kimg))
    return Work(tuple(parts))
