"""Noisy classifier p(y | x_t) for classifier guidance (ADM).

The UNet encoder with attention pooling (pipeline.nets.classifier.NoisyClassifier), trained on
x_t ~ q(x_t | x_0) with t ~ U{0..T-1} (Dhariwal & Nichol, 2021, section 4) through the shared Ray
Train machinery (NoisyClassifierTask; checkpoints in the partial output, exact resume). Logs
the training loss per quartile of t, and top-1 / top-5 on the val split per noise-level bucket
of t. Writes classifier.pt + classifier.json (pipeline.training.artifacts.load_classifier).
"""
from pipeline.graph import StageSpec

STAGE = StageSpec(
    name="train_classifier",
    version="1",
    reads=("classifier", "diffusion"),
    inputs=("shard",),
    description="Noisy classifier p(y | x_t) for classifier guidance (ADM).",
)

RAY_RUN = "ray_train"
NOISE_BUCKETS = 4


def classifier_kwargs(cl, image_size: int, num_classes: int) -> dict:
    """NoisyClassifier constructor arguments from the `classifier` config section."""
    return dict(image_size=image_size, num_classes=num_classes, in_channels=3, base_channels=cl.base_channels,
                channel_mult=tuple(cl.channel_mult), num_res_blocks=cl.num_res_blocks,
                attention_resolutions=tuple(cl.attention_resolutions),
                num_head_channels=cl.num_head_channels if cl.num_head_channels > 0 else None)


def train_spec(cl):
    from pipeline.training.spec import TrainSpec

    return TrainSpec(kimg=cl.kimg, batch_size=cl.batch_size, lr=cl.lr, num_workers=cl.num_workers, seed=cl.seed,
                     warmup_kimg=min(cl.kimg / 10, 1.0), weight_decay=cl.weight_decay, grad_clip=1.0,
                     checkpoint_kimg=max(cl.kimg / 4, cl.batch_size / 1000),
                     log_kimg=max(cl.kimg / 50, cl.batch_size / 1000))


def run(ctx, cfg, inputs):
    import os

    import torch

    from pipeline.data.loader import ShardedDataset
    from pipeline.nets.classifier import NoisyClassifier
    from pipeline.training.artifacts import CLASSIFIER_CONFIG, CLASSIFIER_WEIGHTS, diffusion_dict, save_classifier
    from pipeline.training.diffusion import NoisyClassifierTask, noisy_accuracy
    from pipeline.training.trainer import fit

    cl = cfg.classifier
    shards = inputs["shard"]
    dataset = ShardedDataset(shards.uri)
    ctx.tracker.log_dataset(shards)  # the shards as the MLflow dataset input of this run
    kwargs = classifier_kwargs(cl, dataset.resolution, dataset.num_classes)
    diffusion = diffusion_dict(cfg.diffusion)
    ctx.log_params({"classifier": kwargs})
    ctx.log(f"training the noisy classifier (base {cl.base_channels}) on {dataset.num_images('train')} images for "
            f"{cl.kimg:g} kimg, {cl.num_workers} worker(s)")
    result = fit(NoisyClassifierTask(kwargs, diffusion), train_spec(cl), shards.uri, ctx.out.local_path or ctx.out.uri,
                 name=RAY_RUN)
    state = result.state
    if state.resumes:
        ctx.log(f"resumed from checkpoints at {state.resumes} images seen")
    log_history(ctx, state)

    model = NoisyClassifier(**kwargs)
    model.load_state_dict(state.model)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    val = noisy_accuracy(model, shards.uri, diffusion, "val", buckets=NOISE_BUCKETS, seed=cl.seed)
    ctx.log_metrics(val, step=state.nimg)
    ctx.log("val top-1 per noise bucket of t (least noisy first): "
            + ", ".join(f"{val[f'val_top1_t_q{b}']:.3f}" for b in range(NOISE_BUCKETS))
            + f"; top-5: " + ", ".join(f"{val[f'val_top5_t_q{b}']:.3f}" for b in range(NOISE_BUCKETS)))

    save_classifier(ctx.out, state.model, kwargs, diffusion, nimg=state.nimg, seed=cl.seed)
    ctx.out.delete(RAY_RUN)
    for name in (CLASSIFIER_WEIGHTS, CLASSIFIER_CONFIG):
        with ctx.out.local_file(name) as path:
            ctx.log_artifact(path, "classifier")
    registered = register(ctx, f"{cfg.tracking.experiment}.noisy_classifier", "classifier",
                          {"store.key": ctx.key, "nimg": state.nimg})
    images_per_s = [r["images_per_s"] for r in state.records]
    return {
        **{k: round(v, 4) for k, v in val.items()}, "nimg": state.nimg,
        "final_loss": state.losses[-1][1] if state.losses else None,
        "images_per_s": sum(images_per_s) / len(images_per_s) if images_per_s else None,
        "train_seconds": round(result.seconds, 2), "num_workers": cl.num_workers, "seed": cl.seed,
        "resumed_from_nimg": state.resumes, "registered_model": registered,
    }



def log_history(ctx, state) -> None:
    """Per-step loss and the periodic records, in few MLflow batches (one call per step is slow)."""
    rows = [(int(nimg), {"train_loss": loss}) for nimg, loss in state.losses]
    rows += [(int(r["nimg"]), {("loss_mean" if k == "loss" else k): v for k, v in r.items() if k != "nimg"})
             for r in state.records]
    ctx.tracker.log_metric_rows(rows)


def register(ctx, name: str, artifact_path: str, tags: dict):
    """Register the logged weights in the MLflow model registry; None, with a logged note, where
    the tracking backend refuses (a server without a registry, permissions)."""
    try:
        registered = ctx.tracker.register_model(name, artifact_path, tags, "Noisy classifier of train_classifier")
        ctx.log(f"registered model {registered}")
        return registered
    except Exception as error:
        ctx.log(f"note: the model was not registered in the MLflow model registry ({type(error).__name__}: {error})")
        return None
