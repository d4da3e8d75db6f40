"""Noisy classifier p(y | x_t) for classifier guidance (ADM)."""
from pipeline.graph import StageSpec

STAGE = StageSpec(
    name="train_classifier",
    version="0",
    reads=("classifier", "diffusion"),
    inputs=("shard",),
    description="Noisy classifier p(y | x_t) for classifier guidance (ADM).",
)


def run(ctx, cfg, inputs):
    raise NotImplementedError("not implemented yet: train_classifier")
