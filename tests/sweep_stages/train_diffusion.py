"""Random-weight class-conditional UNet per p_uncond, with a smaller guide in guide/."""
from pipeline.graph import StageSpec

STAGE = StageSpec(name="train_diffusion", version="test-1", reads=("model", "diffusion", "train", "data"),
                  inputs=("shard",), fan_out=("train.p_uncond",),
                  outputs=("model.pt", "model.json", "guide/model.pt", "guide/model.json"))


def unet_kwargs(cfg, base_channels: int) -> dict:
    from tests.sweep_stages import NUM_CLASSES

    m = cfg.model
    return dict(image_size=cfg.data.resolution, in_channels=3, base_channels=base_channels,
                channel_mult=list(m.channel_mult), num_res_blocks=1, attention_resolutions=list(m.attention_resolutions),
                num_heads=m.num_heads, num_head_channels=min(m.num_head_channels, base_channels), dropout=0.0,
                num_classes=NUM_CLASSES, learn_sigma=m.learn_sigma, resblock_updown=m.resblock_updown,
                use_scale_shift_norm=m.use_scale_shift_norm, norm_groups=8)


def run(ctx, cfg, inputs):
    import torch

    from pipeline.nets.unet import UNet
    from pipeline.training.networks import diffusion_dict
    from pipeline.weights import GUIDE_DIR, save_diffusion

    p = ctx.variant["train.p_uncond"]
    ctx.tracker.log_dataset(inputs["shard"])  # as the real stage does
    torch.manual_seed(int(p * 1000))
    for directory, width, role in ((ctx.out, cfg.model.base_channels, "main"),
                                   (ctx.out.subdir(GUIDE_DIR), cfg.train.guide.base_channels, "guide")):
        kwargs = unet_kwargs(cfg, width)
        save_diffusion(directory, UNet(**kwargs).state_dict(), kwargs, diffusion_dict(cfg.diffusion),
                       p_uncond=p, ema_decay=None, nimg=0, role=role)
    return {"p_uncond": p}
