"""Stand-in for the train_diffusion stage: a tiny UNet trained for a few steps, per p_uncond."""
from pipeline.graph import StageSpec

STAGE = StageSpec(name="train_diffusion", version="test", reads=("train",), inputs=("shard",),
                  fan_out=("train.p_uncond",))


def run(ctx, cfg, inputs):
    from tests.generation.conftest import write_diffusion

    write_diffusion(ctx.out, p_uncond=ctx.variant["train.p_uncond"])
    return {"fake": True}
