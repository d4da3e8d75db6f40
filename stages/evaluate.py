"""FID/KID (clean-fid) and offline metrics of the `sample` stage's images."""
from pipeline.graph import StageSpec

STAGE = StageSpec(
    name="evaluate",
    version="0",
    reads=("eval", "sample"),
    inputs=("sample", "reference_stats", "train_evalnet"),
    description="FID/KID (clean-fid) and offline metrics of the `sample` stage's images.",
)


def run(ctx, cfg, inputs):
    raise NotImplementedError("not implemented yet: evaluate")
