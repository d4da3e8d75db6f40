"""Real images -> verified WebDataset shards (train/val), in parallel on Ray.

The driver lists the source and plans the shards (shard j of a split always holds the
same samples); Ray tasks, one per shard, decode, ADM-crop and write whole shards into the
output directory. Parallelism comes from the data: every shard to write is submitted at once
(or at most data.num_tasks at a time), so Ray runs as many as the cluster has CPUs for and an
autoscaling cluster sees the whole demand, however few CPUs it had when the stage started. A shard finished by an
interrupted run is kept (verified against its recorded size and sha256), so a re-run
writes only the missing ones. Then shards.parquet, errors.parquet, classes.json and
dataset.json are written, and the stage fails if fewer than data.min_success_rate of
the inputs became samples.
"""
import dataclasses
import os
import tempfile
import time

from pipeline.capacity import Part, Work
from pipeline.config import hash_value
from pipeline.data.manifest import CLASSES_FILE, ERRORS_FILE
from pipeline.data.plan import plan_shards
from pipeline.data.sources import list_source
from pipeline.graph import StageSpec
from pipeline.resources import Units
from pipeline.store import StoreError, probe

# Function-local imports: they bring in Ray, which planning (it imports every stage) does not need.


def units(cfg):
    return Units("shard task", cfg.data.num_tasks, cpus=1.0, knob="data.num_tasks", per="shard to write")


STAGE = StageSpec(
    name="shard",
    version="2",
    reads=("data",),
    inputs=(),
    units=units,
    outputs=("shards.parquet", "classes.json", "dataset.json", "errors.parquet", "train-*.tar"),
)


def check(cfg) -> list[str]:
    """Before anything starts: a dataset URI (s3://...) answers and holds something (a local
    data.path is checked when the config is loaded)."""
    path = cfg.data.path
    if cfg.data.source in ("digits", "generated") or not path or "://" not in path:
        return []
    try:
        found = probe(path).type.name != "NotFound"
    except StoreError as error:
        return [f"data.path = {path!r}: {error}"]
    return [] if found else [f"data.path = {path!r}: no such file or directory"]


def resolve_source(data_cfg) -> tuple[str, str | None]:
    """(source name, location) to list; a `generated` source is generated first (cached)."""
    if data_cfg.source != "generated":
        return data_cfg.source, data_cfg.path

    from pipeline.data.generate import SOURCE_OF_LAYOUT, TreeSpec, generate_tree

    spec = TreeSpec(**dataclasses.asdict(data_cfg.generated))
    root = data_cfg.path or os.path.join(
        tempfile.gettempdir(), "pipeline-generated", hash_value(dataclasses.asdict(spec))[:16]
    )
    return SOURCE_OF_LAYOUT[spec.layout], generate_tree(root, spec)


def run(ctx, cfg, inputs):
    import ray

    from pipeline.data.build import cleanup_temporaries, finalize, shard_in_parallel
    from pipeline.data.shardwrite import EncodeOptions

    data = cfg.data
    started = time.time()
    source, location = resolve_source(data)
    listing = list_source(source, location, val_fraction=data.val_fraction, seed=data.seed,
                          max_images_per_class=data.max_images_per_class)
    ctx.log(f"{source}: {len(listing.split('train'))} train + {len(listing.split('val'))} val images, "
            f"{len(listing.classes)} classes, {len(listing.errors)} rejected while listing")
    plans = plan_shards(listing.records, data.samples_per_shard, data.seed)
    options = EncodeOptions(resolution=data.resolution, num_classes=len(listing.classes),
                            png_compress_level=data.png_compress_level, jpeg_draft=data.jpeg_draft)
    num_tasks = min(data.num_tasks or len(plans), len(plans)) or 1  # in flight; Ray queues what waits for a CPU
    removed = cleanup_temporaries(ctx.out.fs, ctx.out.path)
    if removed:
        ctx.log(f"removed {removed} temporary file(s) left by an interrupted run")

    bar = ctx.progress(total=len(plans), desc="shard", unit="shard")
    written = [0]

    def on_done(result):
        written[0] += result.num_samples
        bar.update(1)

    listed = time.time()
    try:
        results = shard_in_parallel(ray, ctx.out.uri, plans, location if source != "digits" else None,
                                    options, num_tasks, on_done)
    finally:
        bar.close()
    seconds = time.time() - listed
    summary = finalize(ctx.out.fs, ctx.out.path, listing, plans, results, options,
                       min_success_rate=data.min_success_rate, source=source, out_uri=ctx.out.uri)
    fresh = sum(r.num_samples for r in results if not r.reused)
    summary.update({
        "source": source,
        "resolution": data.resolution,
        "num_tasks": num_tasks,
        "list_seconds": round(listed - started, 3),
        "shard_seconds": round(seconds, 3),
        "images_per_s": round(fresh / seconds, 2) if seconds > 0 else 0.0,
    })
    ctx.log(f"{summary['num_train']} train / {summary['num_val']} val images in "
            f"{summary['num_shards_train'] + summary['num_shards_val']} shards "
            f"({summary['shards_reused']} kept from an interrupted run), {summary['num_errors']} bad input(s)")
    ctx.log_metrics({k: float(v) for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})

    for name in (CLASSES_FILE, ERRORS_FILE):
        with ctx.out.local_file(name) as path:
            ctx.log_artifact(path)
    return summary


def work(cfg, nets):
    """Every listed image decoded, center-cropped and written: CPU work the plan does not cost."""
    size = nets.dataset
    images = size.train + size.val if size else None
    shown = f"{images:,}" if images is not None else "every listed"
    what = f"decode, center-crop to {cfg.data.resolution} px and write {shown} images"
    return Work((Part(what, images, None, None),), note="CPU decoding, not costed: `python -m pipeline.bench shard` "
                                                        "measures it")
