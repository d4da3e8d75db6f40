"""Random-weight noisy classifier."""
from pipeline.graph import StageSpec

STAGE = StageSpec(name="train_classifier", version="test-1", reads=("classifier", "diffusion", "data"),
                  inputs=("shard",),
                  outputs=("classifier.pt", "classifier.json"))


def run(ctx, cfg, inputs):
    import torch

    from pipeline.nets.classifier import NoisyClassifier
    from pipeline.training.networks import diffusion_dict
    from pipeline.weights import save_classifier
    from tests.sweep_stages import NUM_CLASSES

    c = cfg.classifier
    kwargs = dict(image_size=cfg.data.resolution, num_classes=NUM_CLASSES, in_channels=3,
                  base_channels=c.base_channels, channel_mult=list(c.channel_mult), num_res_blocks=1,
                  attention_resolutions=list(c.attention_resolutions),
                  num_head_channels=min(c.num_head_channels, c.base_channels), norm_groups=8)
    torch.manual_seed(1)
    save_classifier(ctx.out, NoisyClassifier(**kwargs).state_dict(), kwargs, diffusion_dict(cfg.diffusion), nimg=0)
    return {}
