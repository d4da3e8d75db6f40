"""Stand-in for train_evalnet: an untrained EvalNet (the real stage is tested in tests/training)."""
from pipeline.graph import StageSpec

STAGE = StageSpec(name="train_evalnet", version="test", reads=("evalnet",), inputs=("shard",))


def run(ctx, cfg, inputs):
    from tests.generation.conftest import write_evalnet

    write_evalnet(ctx.out)
    return {"fake": True}
