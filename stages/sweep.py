"""Ray Tune over guidance kind x strength x sampler x steps x p_uncond; each trial samples and evaluates."""
from pipeline.graph import StageSpec

STAGE = StageSpec(
    name="sweep",
    version="0",
    reads=("sweep", "sample", "eval", "diffusion"),
    inputs=("train_diffusion", "train_classifier", "train_evalnet", "reference_stats"),
    description="Ray Tune over guidance kind x strength x sampler x steps x p_uncond; each trial samples and evaluates.",
)


def run(ctx, cfg, inputs):
    raise NotImplementedError("not implemented yet: sweep")
