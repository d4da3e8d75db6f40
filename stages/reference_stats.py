"""Feature statistics of the real data per extractor (FID/KID/precision-recall references)."""
from pipeline.graph import StageSpec

STAGE = StageSpec(
    name="reference_stats",
    version="0",
    reads=("eval",),
    inputs=("shard", "train_evalnet"),
    description="Feature statistics of the real data per extractor (FID/KID/precision-recall references).",
)


def run(ctx, cfg, inputs):
    raise NotImplementedError("not implemented yet: reference_stats")
