from tests.fake_stages.graph import read_json, spec, write_parts

STAGE = spec("train", reads=["train"], inputs=["source"], fan_out=["train.p_uncond"])


def run(ctx, cfg, inputs):
    total = sum(read_json(inputs["source"], f"source-{i}.json")["value"] for i in range(3))
    p = ctx.variant["train.p_uncond"]
    ctx.log_metrics({"loss": total * cfg.train.lr}, step=0)
    return write_parts(ctx, "train", [{"total": total, "p_uncond": p, "lr": cfg.train.lr}])
