from tests.fake_stages.graph import read_json, spec, write_parts

STAGE = spec("report", reads=[], inputs=["train", "evalnet"])


def run(ctx, cfg, inputs):
    rows = [read_json(out, "train-0.json") for out in inputs["train"].values()]
    width = read_json(inputs["evalnet"], "evalnet-0.json")["width"]
    summary = write_parts(ctx, "report", [{"rows": rows, "width": width}])
    with ctx.out.local_file("report-0.json") as path:
        ctx.log_artifact(path)
    # what the runner shows of a stage: its page (linked and printed) and headline numbers (on the parent run)
    return {**summary, "pages": ["report-0.json"], "headline": {"rows": len(rows), "width": width}}
