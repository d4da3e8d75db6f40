"""Clean evaluation classifier: the offline feature space for metrics.

Trained on the real images of the shard output's train split with the shared Ray Train
machinery (pipeline.training), its own seed; Ray Train's checkpoints live in the partial
output, so an interrupted stage resumes from the last one when the runner re-runs it. Writes
evalnet.pt + evalnet.json (load with pipeline.training.evalnet.load_evalnet, no Ray needed)
and reports held-out accuracy on the val split.
"""
from pipeline.graph import StageSpec

STAGE = StageSpec(
    name="train_evalnet",
    version="1",
    reads=("evalnet",),
    inputs=("shard",),
    description="Clean evaluation classifier: the offline feature space for metrics.",
)

RAY_RUN = "ray_train"  # Ray Train's run directory inside the partial output


def train_spec(ev):
    """The TrainSpec of an `evalnet` config section."""
    from pipeline.training.spec import TrainSpec

    return TrainSpec(kimg=ev.kimg, batch_size=ev.batch_size, lr=ev.lr, num_workers=ev.num_workers, seed=ev.seed,
                     warmup_kimg=ev.warmup_kimg, weight_decay=ev.weight_decay, grad_clip=ev.grad_clip,
                     checkpoint_kimg=ev.checkpoint_kimg, keep_checkpoints=ev.keep_checkpoints)


def run(ctx, cfg, inputs):
    from pipeline.data.loader import ShardedDataset
    from pipeline.training.evalnet import (CONFIG_FILE, WEIGHTS_FILE, EvalnetArch, EvalnetTask, accuracy,
                                           save_evalnet)
    from pipeline.training.trainer import fit

    ev = cfg.evalnet
    shards = inputs["shard"]
    dataset = ShardedDataset(shards.uri)
    ctx.tracker.log_dataset(shards)  # the shards as the MLflow dataset input of this run
    arch = EvalnetArch.from_config(ev, in_channels=3, num_classes=dataset.num_classes)
    spec = train_spec(ev)
    ctx.log(f"training EvalNet {arch} on {dataset.num_images('train')} images for {ev.kimg:g} kimg, "
            f"{ev.num_workers} worker(s)")
    result = fit(EvalnetTask(arch), spec, shards.uri, ctx.out.local_path or ctx.out.uri, name=RAY_RUN)
    state = result.state
    if state.resumes:
        ctx.log(f"resumed from checkpoints at {state.resumes} images seen")

    for nimg, loss in state.losses:
        ctx.log_metrics({"train_loss": loss}, step=nimg)
    for record in state.records:
        ctx.log_metrics({"loss_mean": record["loss"], "images_per_s": record["images_per_s"], "lr": record["lr"],
                         "grad_norm": record["grad_norm"]}, step=int(record["nimg"]))

    model = arch.build()
    model.load_state_dict(state.model)
    val_accuracy, num_val = accuracy(model, shards.uri, "val")
    train_accuracy, _ = accuracy(model, shards.uri, "train")
    ctx.log_metrics({"val_accuracy": val_accuracy, "train_accuracy": train_accuracy}, step=state.nimg)
    ctx.log(f"held-out accuracy {val_accuracy:.4f} on {num_val} val images (train {train_accuracy:.4f}), "
            f"{result.seconds:.1f}s")

    save_evalnet(ctx.out, model, arch)
    ctx.out.delete(RAY_RUN)  # checkpoints were for resuming; the output is the final weights
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        with ctx.out.local_file(name) as path:
            ctx.log_artifact(path)
    images_per_s = [r["images_per_s"] for r in state.records]
    return {
        "val_accuracy": val_accuracy, "train_accuracy": train_accuracy, "num_val": num_val,
        "nimg": state.nimg, "final_loss": state.losses[-1][1] if state.losses else None,
        "images_per_s": sum(images_per_s) / len(images_per_s) if images_per_s else None,
        "train_seconds": round(result.seconds, 2), "num_workers": ev.num_workers, "seed": ev.seed,
        "resumed_from_nimg": state.resumes,
    }
