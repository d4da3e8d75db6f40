"""Clean evaluation classifier: the offline feature space for metrics.

Trained on the real images of the shard output's train split with the shared Ray Train
machinery (pipeline.training), its own seed; Ray Train's checkpoints live in the partial
output, so an interrupted stage resumes from the last one when the runner re-runs it. Writes
evalnet.pt + evalnet.json (load with pipeline.weights.load_evalnet, no Ray needed) and
reports held-out accuracy on the val split.
"""
from pipeline.capacity import Work, training
from pipeline.graph import StageSpec
from pipeline.training.spec import train_spec  # cheap: no torch, no Ray

# Function-local imports: they bring in torch and webdataset, which planning (it imports every stage) does not need.

STAGE = StageSpec(
    name="train_evalnet",
    version="1",
    reads=("evalnet",),
    inputs=("shard",),
    units=lambda cfg: train_spec(cfg.evalnet).units,
    outputs=("evalnet.pt", "evalnet.json"),
)

RAY_RUN = "ray_train"  # Ray Train's run directory inside the partial output


def run(ctx, cfg, inputs):
    from pipeline.data.loader import ShardedDataset
    from pipeline.training.evalnet import EvalnetTask, accuracy
    from pipeline.training.networks import evalnet_arch
    from pipeline.training.stage_run import (
        fit_in_stage,
        log_files,
        log_history,
        summary,
    )
    from pipeline.weights import EVALNET_CONFIG, EVALNET_WEIGHTS, save_evalnet

    ev = cfg.evalnet
    shards = inputs["shard"]
    dataset = ShardedDataset(shards.uri)
    ctx.tracker.log_dataset(shards)  # the shards as the MLflow dataset input of this run
    arch = evalnet_arch(ev, in_channels=3, num_classes=dataset.num_classes)
    spec = train_spec(ev)
    ctx.log(f"training EvalNet {arch} on {dataset.num_images('train')} images")
    result = fit_in_stage(ctx, cfg.cluster, EvalnetTask(arch), spec, shards.uri, RAY_RUN)
    state = result.state
    log_history(ctx, state)

    model = arch.build()
    model.load_state_dict(state.model)
    val_accuracy, num_val = accuracy(model, shards.uri, "val")
    train_accuracy, _ = accuracy(model, shards.uri, "train")
    ctx.log_metrics({"val_accuracy": val_accuracy, "train_accuracy": train_accuracy}, step=state.nimg)
    ctx.log(f"held-out accuracy {val_accuracy:.4f} on {num_val} val images (train {train_accuracy:.4f}), "
            f"{result.seconds:.1f}s")

    save_evalnet(ctx.out, model, arch)
    ctx.out.delete(RAY_RUN)  # checkpoints were for resuming; the output is the final weights
    log_files(ctx, [EVALNET_WEIGHTS, EVALNET_CONFIG])
    return {"val_accuracy": val_accuracy, "train_accuracy": train_accuracy, "num_val": num_val,
            **summary(result, spec)}


def work(cfg, nets):
    return Work((training("evalnet", nets.evalnet, cfg.evalnet),))
