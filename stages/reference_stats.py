"""Feature statistics of the real data per extractor (FID/KID/precision-recall references).

One ordered pass over the shard output's train split (the first eval.num_reference images, or
all), through every configured extractor at once: the evaluation classifier (train_evalnet
output) and clean-fid's Inception when its weights are present (else skipped with a note,
unless eval.require_inception). Writes stats_<extractor>.npz (pipeline.metrics.FeatureStats:
mean, covariance, N, a kept subsample for KID and precision/recall; loaded without pickle) and
reference.json naming each file with its stats id, the id every metric's protocol records.
"""
from pipeline.graph import StageSpec

STAGE = StageSpec(
    name="reference_stats",
    version="1",
    reads=("eval",),
    inputs=("shard", "train_evalnet"),
    outputs=("reference.json", "stats_*.npz"),
)

SPLIT = "train"


def run(ctx, cfg, inputs):
    import time

    from pipeline.generation.scoring import make_extractors, reference_batches, reference_stats, write_references

    ev = cfg.eval
    shards = inputs["shard"]
    extractors, notes = make_extractors(ev, inputs["train_evalnet"].uri)
    for note in notes:
        ctx.log(note)
    started = time.time()
    stats = reference_stats(extractors, reference_batches(shards.uri, SPLIT, ev.batch_size, ev.num_reference))
    seconds = time.time() - started
    index = write_references(ctx.out, stats, split=SPLIT, num_reference=ev.num_reference, shard_key=shards.key,
                             notes=notes)
    for name, entry in index.items():
        ctx.log(f"{name}: {entry['num_samples']} real images, {entry['feature_dim']}-d features, "
                f"stats id {entry['stats_id'][:12]}")
    ctx.set_tags({f"reference.{name}.stats_id": entry["stats_id"] for name, entry in index.items()})
    ctx.log_params({"split": SPLIT, "num_reference": ev.num_reference, "extractors": ",".join(index)})
    num = next(iter(index.values()))["num_samples"]
    ctx.log_metrics({"num_images": float(num), "images_per_s": num / seconds if seconds > 0 else 0.0})
    return {"extractors": index, "split": SPLIT, "num_images": num, "notes": notes, "seconds": round(seconds, 3)}


def work(cfg, nets):
    """Features of the first eval.num_reference training images, or all."""
    from pipeline.capacity import Work, features

    listed, wanted = (nets.dataset.train if nets.dataset else None), cfg.eval.num_reference
    images = min(listed, wanted) if listed and wanted else (wanted or listed)
    return Work((features("training images", images, nets, cfg.eval.extractors),))
