"""Stand-in for the train_classifier stage: a tiny noisy classifier trained for a few steps."""
from pipeline.graph import StageSpec

STAGE = StageSpec(name="train_classifier", version="test", reads=("classifier",), inputs=("shard",))


def run(ctx, cfg, inputs):
    from tests.generation.conftest import write_classifier

    write_classifier(ctx.out)
    return {"fake": True}
