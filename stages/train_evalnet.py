"""Clean evaluation classifier: the offline feature space for metrics."""
from pipeline.graph import StageSpec

STAGE = StageSpec(
    name="train_evalnet",
    version="0",
    reads=("evalnet",),
    inputs=("shard",),
    description="Clean evaluation classifier: the offline feature space for metrics.",
)


def run(ctx, cfg, inputs):
    raise NotImplementedError("not implemented yet: train_evalnet")
