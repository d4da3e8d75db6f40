"""Noisy classifier p(y | x_t) for classifier guidance (ADM).

The UNet encoder with attention pooling (pipeline.nets.classifier.NoisyClassifier), trained on
x_t ~ q(x_t | x_0) with t ~ U{0..T-1} (Dhariwal & Nichol, 2021, section 4) through the shared Ray
Train machinery (NoisyClassifierTask; checkpoints in the partial output, exact resume). Logs
the training loss per quartile of t, and top-1 / top-5 on the val split per noise-level bucket
of t. Writes classifier.pt + classifier.json (pipeline.weights.load_classifier).
"""
import os

from pipeline.capacity import Work, training
from pipeline.graph import StageSpec
from pipeline.training.spec import train_spec  # cheap: no torch, no Ray

# Function-local imports: they bring in torch and webdataset, which planning (it imports every stage) does not need.

STAGE = StageSpec(
    name="train_classifier",
    version="1",
    reads=("classifier", "diffusion"),
    inputs=("shard",),
    units=lambda cfg: train_spec(cfg.classifier).units,
    outputs=("classifier.pt", "classifier.json"),
)

RAY_RUN = "ray_train"
NOISE_BUCKETS = 4


def run(ctx, cfg, inputs):
    import torch

    from pipeline.data.loader import ShardedDataset
    from pipeline.nets.classifier import NoisyClassifier
    from pipeline.training.diffusion import NoisyClassifierTask, noisy_accuracy
    from pipeline.training.networks import classifier_kwargs, diffusion_dict
    from pipeline.training.stage_run import (
        fit_in_stage,
        log_files,
        log_history,
        register,
        summary,
    )
    from pipeline.weights import CLASSIFIER_CONFIG, CLASSIFIER_WEIGHTS, save_classifier

    cl = cfg.classifier
    shards = inputs["shard"]
    dataset = ShardedDataset(shards.uri)
    ctx.tracker.log_dataset(shards)  # the shards as the MLflow dataset input of this run
    kwargs = classifier_kwargs(cl, dataset.resolution, dataset.num_classes)
    diffusion = diffusion_dict(cfg.diffusion)
    spec = train_spec(cl)
    ctx.log_params({"classifier": kwargs})
    ctx.log(f"training the noisy classifier (base {cl.base_channels}) on {dataset.num_images('train')} images")
    result = fit_in_stage(ctx, cfg.cluster, NoisyClassifierTask(kwargs, diffusion), spec, shards.uri, RAY_RUN)
    state = result.state
    log_history(ctx, state)

    model = NoisyClassifier(**kwargs)
    model.load_state_dict(state.model)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    val = noisy_accuracy(model, shards.uri, diffusion, "val", buckets=NOISE_BUCKETS, seed=cl.seed)
    ctx.log_metrics(val, step=state.nimg)
    ctx.log("val top-1 per noise bucket of t (least noisy first): "
            + ", ".join(f"{val[f'val_top1_t_q{b}']:.3f}" for b in range(NOISE_BUCKETS))
            + "; top-5: " + ", ".join(f"{val[f'val_top5_t_q{b}']:.3f}" for b in range(NOISE_BUCKETS)))

    save_classifier(ctx.out, state.model, kwargs, diffusion, nimg=state.nimg, seed=cl.seed)
    ctx.out.delete(RAY_RUN)
    log_files(ctx, [CLASSIFIER_WEIGHTS, CLASSIFIER_CONFIG], "classifier")
    registered = register(ctx, f"{cfg.tracking.experiment}.noisy_classifier", "classifier", {"nimg": state.nimg},
                          "Noisy classifier of train_classifier")
    return {**{k: round(v, 4) for k, v in val.items()}, **summary(result, spec), "registered_model": registered}


def work(cfg, nets):
    return Work((training("noisy classifier", nets.classifier, cfg.classifier),))
