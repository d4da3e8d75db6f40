"""Feature statistics of the real data per extractor (FID/KID/precision-recall references).

The first eval.num_reference images (or all) of the shard output's train split, in the shards'
order, through every configured extractor: the evaluation classifier (train_evalnet output) and
clean-fid's Inception when its weights are present (else skipped with a note, unless
eval.require_inception). The shards are read by a pool of feature extractor actors
(pipeline.generation.pool: up to eval.num_workers, eval.cpus_per_worker CPUs each, one GPU each
with eval.use_gpu), a run of consecutive shards per task; each returns the moments and the kept
features of its images (pipeline.generation.features), merged in index order into the statistics
of one pass. Writes stats_<extractor>.npz (pipeline.metrics.FeatureStats: mean, covariance, N, a
kept subsample for KID and precision/recall; loaded without pickle) and reference.json naming each
file with its stats id, the id every metric's protocol records, and where each task ran.
"""
import time

from pipeline.capacity import Work, features
from pipeline.graph import StageSpec
from pipeline.resources import Placement, Units

# Function-local imports: they bring in torch, SciPy and webdataset, which planning (it imports every
# stage) does not need.


def units(cfg) -> Units:
    e = cfg.eval
    return Units("feature extractor", e.num_workers, cpus=e.cpus_per_worker, gpus=1.0 if e.use_gpu else 0.0,
                 knob="eval.num_workers", gpu_knob="eval.use_gpu", pool=True)


STAGE = StageSpec(
    name="reference_stats",
    version="2",
    reads=("eval",),
    inputs=("shard", "train_evalnet"),
    outputs=("reference.json", "stats_*.npz"),
    units=units,
)

SPLIT = "train"
MAX_TASK_IMAGES = 50_000  # a task's images (its moments and kept features travel back once)


def run(ctx, cfg, inputs):
    from pipeline.data.loader import ShardedDataset
    from pipeline.generation.features import gather, parts_for, shard_tasks
    from pipeline.generation.pool import Pool
    from pipeline.generation.scoring import REFERENCE, write_references
    from pipeline.generation.workers import (
        WorkerSpec,
        count_by,
        where_record,
        where_tags,
    )

    ev = cfg.eval
    shards = inputs["shard"]
    entries = ShardedDataset(shards.uri).shards(SPLIT)
    available = sum(e.num_samples for e in entries)
    wanted = available if ev.num_reference is None else min(ev.num_reference, available)
    tasks, num = shard_tasks(shards.uri, SPLIT, entries, ev.num_reference,
                             parts_for(wanted, ev.num_workers, MAX_TASK_IMAGES), ev.batch_size,
                             eval_cfg=ev, evalnet=inputs["train_evalnet"].uri, gathering=REFERENCE.for_stream(wanted))
    ctx.log(f"{num} real images of {len(entries)} {SPLIT} shards in {len(tasks)} feature tasks")
    worker = WorkerSpec(stage="reference_stats", features_on_gpu=ev.use_gpu, require_cuda=cfg.cluster.require_cuda,
                        threads=max(1, int(ev.cpus_per_worker)))
    placement = Placement.from_config(cfg.cluster, "reference_stats", ctx.log)
    bar = ctx.progress(total=num, desc="reference_stats", unit="img")
    started = time.time()
    try:
        with Pool.start(units(cfg), worker, placement, "eval.cpus_per_worker, eval.use_gpu") as pool:
            gathered, done, notes = gather(pool, tasks, on_result=lambda r: bar.update(r["num_images"]))
    finally:
        bar.close()
    seconds = time.time() - started
    for note in notes:
        ctx.log(note)
    made = [where_record(d) for d in done]
    stats = {name: features.stats for name, features in gathered.items()}
    index = write_references(ctx.out, stats, split=SPLIT, num_reference=ev.num_reference, shard_key=shards.key,
                             notes=notes, units=made, nodes=count_by(made, "node_id"),
                             node_types=count_by(made, "node_type"))
    for name, entry in index.items():
        ctx.log(f"{name}: {entry['num_samples']} real images, {entry['feature_dim']}-d features, "
                f"stats id {entry['stats_id'][:12]}")
    ctx.set_tags({**{f"reference.{name}.stats_id": entry["stats_id"] for name, entry in index.items()},
                  **where_tags(made)})
    ctx.log_params({"split": SPLIT, "num_reference": ev.num_reference, "extractors": ",".join(index)})
    num = next(iter(index.values()))["num_samples"]
    ctx.log_metrics({"num_images": float(num), "images_per_s": num / seconds if seconds > 0 else 0.0})
    return {"extractors": index, "split": SPLIT, "num_images": num, "notes": notes, "seconds": round(seconds, 3),
            "nodes": count_by(made, "node_id")}


def work(cfg, nets):
    """Features of the first eval.num_reference training images, or all."""
    listed, wanted = (nets.dataset.train if nets.dataset else None), cfg.eval.num_reference
    images = min(listed, wanted) if listed and wanted else (wanted or listed)
    return Work((features("training images", images, nets, cfg.eval.extractors),))
