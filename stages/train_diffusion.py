"""Class-conditional ADM UNet on Ray Train, one model per p_uncond (classifier-free dropout)."""
from pipeline.graph import StageSpec

STAGE = StageSpec(
    name="train_diffusion",
    version="0",
    reads=("model", "diffusion", "train"),
    inputs=("shard",),
    fan_out=("train.p_uncond",),
    description="Class-conditional ADM UNet on Ray Train, one model per p_uncond (classifier-free dropout).",
)


def run(ctx, cfg, inputs):
    raise NotImplementedError("not implemented yet: train_diffusion")
