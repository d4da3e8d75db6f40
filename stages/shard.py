"""Real images -> verified WebDataset shards (train/val), in parallel on Ray."""
from pipeline.graph import StageSpec

STAGE = StageSpec(
    name="shard",
    version="0",
    reads=("data",),
    inputs=(),
    description="Real images -> verified WebDataset shards (train/val), in parallel on Ray.",
)


def run(ctx, cfg, inputs):
    raise NotImplementedError("not implemented yet: shard")
