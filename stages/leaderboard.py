"""The ranked table, plots and sample grids, logged to MLflow."""
from pipeline.graph import StageSpec

STAGE = StageSpec(
    name="leaderboard",
    version="0",
    reads=("sweep",),
    inputs=("sweep",),
    description="The ranked table, plots and sample grids, logged to MLflow.",
)


def run(ctx, cfg, inputs):
    raise NotImplementedError("not implemented yet: leaderboard")
