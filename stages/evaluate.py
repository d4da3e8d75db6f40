"""FID/KID (clean-fid) and offline metrics of the `sample` stage's images.

The sample chunks are streamed into the extractors one chunk at a time (no PNG files), against
the reference_stats output: fid, kid, is, precision/recall with clean-fid's Inception when its
weights are there, and fd_evalnet, kid_evalnet, is_evalnet, precision/recall_evalnet and
class_accuracy in the evaluation classifier's space (pipeline.generation.scoring). Every metric
is logged to MLflow with its protocol (extractor, N, reference statistics id, seed range, k of
precision/recall, KID subsets) as params protocol.<extractor>.<field>; metrics.json holds the
same in the output.
"""
from pipeline.graph import StageSpec

STAGE = StageSpec(
    name="evaluate",
    version="2",
    reads=("eval", "sample"),
    inputs=("sample", "reference_stats", "train_evalnet"),
    outputs=("metrics.json",),
)

METRICS_FILE = "metrics.json"


def usable_extractors(extractors, references, require_inception: bool) -> tuple[list, list[str]]:
    """Extractors that have reference statistics; a missing one is a note (or an error for a
    required Inception: its references were computed while the weights were missing)."""
    usable, notes = [], []
    for extractor in extractors:
        if extractor.name in references:
            usable.append(extractor)
            continue
        message = (f"{extractor.name}: the reference statistics have no {extractor.name} features (they were "
                   f"computed without it); re-run them with `--force reference_stats`")
        if extractor.name == "inception" and require_inception:
            raise ValueError(message)
        notes.append(message + "; skipped")
    if not usable:
        raise ValueError("no extractor has reference statistics: " + " ".join(notes))
    return usable, notes


def run(ctx, cfg, inputs):
    import time

    from pipeline.generation import (iter_chunks, load_references, make_extractors, plan_chunks, protocol_id,
                                     protocol_params, score_batches)

    samples = inputs["sample"]
    info = samples.read_json("samples.json")
    references = load_references(inputs["reference_stats"].uri)
    extractors, notes = make_extractors(cfg.eval, inputs["train_evalnet"].uri)
    extractors, more = usable_extractors(extractors, references, cfg.eval.require_inception)
    notes += more
    for note in notes:
        ctx.log(note)
    plans = plan_chunks(info["num_images"], info["chunk_size"])
    bar = ctx.progress(total=info["num_images"], desc="evaluate", unit="img")

    def stream():
        for images, labels, _ in iter_chunks(samples, plans):
            bar.update(len(labels))
            yield images, labels

    started = time.time()
    try:
        metrics, protocol = score_batches(stream(), extractors, references, cfg.eval, info["seed_range"])
    finally:
        bar.close()
    seconds = time.time() - started
    for fields in protocol.values():  # what the numbers are comparable under (not which trial made them)
        fields["reference_key"] = inputs["reference_stats"].key
    ids = {name: protocol_id(fields) for name, fields in protocol.items()}
    ctx.log_metrics(metrics)
    ctx.log_params(protocol_params(protocol))
    ctx.set_tags({"trial": info["name"], **{f"protocol.{name}.id": pid for name, pid in ids.items()},
                  **{f"reference.{name}.stats_id": p["reference_stats_id"] for name, p in protocol.items()}})
    ctx.log_metrics({"eval_seconds": seconds, "eval_images_per_s": info["num_images"] / seconds if seconds else 0.0})
    for key in sorted(metrics):
        ctx.log(f"{key} = {metrics[key]:.4f}")
    result = {"metrics": metrics, "protocol": protocol, "protocol_ids": ids, "notes": notes, "config": info["config"],
              "name": info["name"], "nfe_per_image": info["nfe_per_image"], "num_images": info["num_images"]}
    ctx.out.write_json(METRICS_FILE, result)
    return {**result, "eval_seconds": round(seconds, 3)}


def work(cfg, nets):
    from pipeline.capacity import Work, features

    return Work((features("samples", cfg.sample.num_images, nets, cfg.eval.extractors),))
