"""FID/KID (clean-fid) and offline metrics of the `sample` stage's images.

The sample chunks are read by a pool of feature extractor actors (pipeline.generation.pool: up to
eval.num_workers, eval.cpus_per_worker CPUs each, one GPU each with eval.use_gpu), a run of
consecutive chunks per task; each returns its mergeable statistics (moments, kept features,
interval groups, IS sums, class counts: pipeline.generation.features), merged in index order into
what one pass gathers, and scored against the reference_stats output: fid, kid, is,
precision/recall with clean-fid's Inception when its weights are there, and fd_evalnet,
kid_evalnet, is_evalnet, precision/recall_evalnet and class_accuracy in the evaluation
classifier's space (pipeline.generation.scoring). Every metric is logged to MLflow with its
protocol (extractor, N, reference statistics id, seed range, k of precision/recall, KID subsets)
as params protocol.<extractor>.<field>; metrics.json holds the same in the output, and where each
feature task ran (Ray node id, node type, device).
"""
import time

from pipeline.capacity import Work, features
from pipeline.graph import StageSpec
from pipeline.resources import Placement, Units

# Function-local imports: they bring in torch and SciPy, which planning (it imports every stage) does not need.


def units(cfg) -> Units:
    e = cfg.eval
    return Units("feature extractor", e.num_workers, cpus=e.cpus_per_worker, gpus=1.0 if e.use_gpu else 0.0,
                 knob="eval.num_workers", gpu_knob="eval.use_gpu", pool=True)


STAGE = StageSpec(
    name="evaluate",
    version="3",
    reads=("eval", "sample"),
    inputs=("sample", "reference_stats", "train_evalnet"),
    outputs=("metrics.json",),
    units=units,
)

METRICS_FILE = "metrics.json"


def usable_names(wanted, references, require_inception: bool) -> tuple[list[str], list[str]]:
    """The configured extractors that have reference statistics; a missing one is a note (or an
    error for a required Inception: its references were computed while the weights were missing)."""
    usable, notes = [], []
    for name in wanted:
        if name in references:
            usable.append(name)
            continue
        message = (f"{name}: the reference statistics have no {name} features (they were "
                   f"computed without it); re-run them with `--force reference_stats`")
        if name == "inception" and require_inception:
            raise ValueError(message)
        notes.append(message + "; skipped")
    if not usable:
        raise ValueError("no extractor has reference statistics: " + " ".join(notes))
    return usable, notes


def run(ctx, cfg, inputs):
    from pipeline.generation import (
        load_references,
        plan_chunks,
        protocol_id,
        protocol_params,
    )
    from pipeline.generation.features import chunk_tasks, gather, parts_for
    from pipeline.generation.pool import Pool
    from pipeline.generation.scoring import SCORING, score_gathered
    from pipeline.generation.workers import (
        WorkerSpec,
        count_by,
        where_record,
        where_tags,
    )

    samples = inputs["sample"]
    info = samples.read_json("samples.json")
    references = load_references(inputs["reference_stats"].uri)
    names, notes = usable_names(cfg.eval.extractors, references, cfg.eval.require_inception)
    plans = plan_chunks(info["num_images"], info["chunk_size"])
    tasks = chunk_tasks(samples.uri, plans, parts_for(info["num_images"], cfg.eval.num_workers),
                        eval_cfg=cfg.eval, evalnet=inputs["train_evalnet"].uri,
                        gathering=SCORING.for_stream(info["num_images"]), names=tuple(names))
    worker = WorkerSpec(stage="evaluate", features_on_gpu=cfg.eval.use_gpu, require_cuda=cfg.cluster.require_cuda,
                        threads=max(1, int(cfg.eval.cpus_per_worker)))
    placement = Placement.from_config(cfg.cluster, "evaluate", ctx.log)
    bar = ctx.progress(total=info["num_images"], desc="evaluate", unit="img")
    started = time.time()
    try:
        with Pool.start(units(cfg), worker, placement, "eval.cpus_per_worker, eval.use_gpu") as pool:
            gathered, done, more = gather(pool, tasks, on_result=lambda r: bar.update(r["num_images"]))
    finally:
        bar.close()
    notes += more
    for note in notes:
        ctx.log(note)
    metrics, protocol = score_gathered(gathered, references, cfg.eval, info["seed_range"])
    seconds = time.time() - started
    made = [where_record(d) for d in done]
    for fields in protocol.values():  # what the numbers are comparable under (not which trial made them)
        fields["reference_key"] = inputs["reference_stats"].key
    ids = {name: protocol_id(fields) for name, fields in protocol.items()}
    ctx.log_metrics(metrics)
    ctx.log_params(protocol_params(protocol))
    ctx.set_tags({"trial": info["name"], **{f"protocol.{name}.id": pid for name, pid in ids.items()},
                  **{f"reference.{name}.stats_id": p["reference_stats_id"] for name, p in protocol.items()},
                  **where_tags(made)})
    ctx.log_metrics({"eval_seconds": seconds, "eval_images_per_s": info["num_images"] / seconds if seconds else 0.0})
    for key in sorted(metrics):
        ctx.log(f"{key} = {metrics[key]:.4f}")
    result = {"metrics": metrics, "protocol": protocol, "protocol_ids": ids, "notes": notes, "config": info["config"],
              "name": info["name"], "nfe_per_image": info["nfe_per_image"], "num_images": info["num_images"],
              "units": made, "nodes": count_by(made, "node_id"), "node_types": count_by(made, "node_type")}
    ctx.out.write_json(METRICS_FILE, result)
    return {**{k: v for k, v in result.items() if k != "units"}, "eval_seconds": round(seconds, 3)}


def work(cfg, nets):
    return Work((features("samples", cfg.sample.num_images, nets, cfg.eval.extractors),))
