"""Random-weight EvalNet (the offline feature space)."""
from pipeline.graph import StageSpec

STAGE = StageSpec(name="train_evalnet", version="test-1", reads=("evalnet",), inputs=("shard",),
                  outputs=("evalnet.pt", "evalnet.json"))


def run(ctx, cfg, inputs):
    import torch

    from pipeline.training.networks import evalnet_arch
    from pipeline.weights import save_evalnet
    from tests.sweep_stages import NUM_CLASSES

    arch = evalnet_arch(cfg.evalnet, in_channels=3, num_classes=NUM_CLASSES)
    torch.manual_seed(2)
    save_evalnet(ctx.out, arch.build(), arch)
    return {}
