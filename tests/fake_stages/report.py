from tests.fake_stages.graph import read_json, spec, write_parts

STAGE = spec("report", reads=[], inputs=["train", "evalnet"])


def run(ctx, cfg, inputs):
    rows = [read_json(out, "train-0.json") for out in inputs["train"].values()]
    width = read_json(inputs["evalnet"], "evalnet-0.json")["width"]
    return write_parts(ctx, "report", [{"rows": rows, "width": width}])
