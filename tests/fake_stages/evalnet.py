from tests.fake_stages.graph import read_json, spec, write_parts

STAGE = spec("evalnet", reads=["evalnet"], inputs=["source"])


def run(ctx, cfg, inputs):
    value = read_json(inputs["source"], "source-0.json")["value"]
    return write_parts(ctx, "evalnet", [{"width": cfg.evalnet.width, "value": value}])
