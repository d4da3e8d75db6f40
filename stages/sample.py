"""N images for one sampler configuration on a pool of Ray actors, per-image seeds."""
from pipeline.graph import StageSpec

STAGE = StageSpec(
    name="sample",
    version="0",
    reads=("sample", "diffusion"),
    inputs=("train_diffusion", "train_classifier"),
    description="N images for one sampler configuration on a pool of Ray actors, per-image seeds.",
)


def run(ctx, cfg, inputs):
    raise NotImplementedError("not implemented yet: sample")
