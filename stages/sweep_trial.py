"""One sweep trial: sample N images of one sampler configuration on the sweep's pool and score them.

Not a stage: the body of the sweep stage's Ray Tune trials (stages/sweep.py runs them). It runs
inside a trial (any node) and does little itself: it hands its (configuration, index range) chunks
to the sweep's pool of sampler actors (pipeline.generation.pool, found by name), then the feature
tasks over those chunks, merges their statistics and computes the metrics (pipeline.generation:
the same code and protocol as the sample/evaluate stages). It writes, into the sweep's partial
output,
    samples/<config_id>/chunk_<k>.npz     the images, chunk by chunk (the unit of resume)
    samples/<config_id>/units/chunk_<k>.json   where each chunk was made
    results/<fidelity>/<config_id>.json   the trial's row (written last: its presence means done)
    grids/<config_id>.png                 one row per class
A trial killed midway (its node lost, the driver killed) regenerates only its missing chunks when it
runs again. Image i of a configuration depends only on (seed, i), and the full round's chunks start
with the screening round's (chunks.plan_chunks with `prefix`), so the full round generates only
the images after `screen_images`. Without a pool (`TrialInputs.pool` None) the same work runs in
this process (tests, small runs).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from pipeline.generation import (
    SamplerConfig,
    load_references,
    nfe_per_image,
    plan_chunks,
    protocol_id,
    seed_range,
)
from pipeline.generation.chunks import read_chunk, remove_temporaries
from pipeline.generation.features import chunk_tasks, gather
from pipeline.generation.grid import class_grid_png
from pipeline.generation.pool import Pool, sample_chunks
from pipeline.generation.scoring import SCORING, score_gathered
from pipeline.generation.workers import (
    InProcess,
    WorkerSpec,
    count_by,
    where_record,
    where_records,
)
from pipeline.resources import unit_location
from pipeline.store import Directory

# Function-local imports: they bring in Ray, which planning (it imports every stage) does not need.

SCREEN, FULL = "screen", "full"
SAMPLES_DIR = "samples"
UNITS_DIR = "units"
GRID_PER_CLASS, GRID_CLASSES = 8, 16


@dataclass(frozen=True)
class TrialInputs:
    """What every trial of a sweep shares (picklable; handed to Tune with tune.with_parameters)."""

    out_uri: str  # the sweep stage's partial output
    diffusion: dict[float, str]  # p_uncond -> train_diffusion output URI
    classifier: Optional[str]
    evalnet: Optional[str]
    reference_stats: str
    eval_cfg: Any  # pipeline.config.EvalConfig
    batch_size: int
    dataset: str
    num_train_timesteps: int = 1000  # diffusion.timesteps (NFE counts of respaced samplers)
    pool: Optional[str] = None  # the sweep's pool (its coordinator's name); None: work in this process
    chunk_size: int = 500
    screen_images: Optional[int] = None  # the screening round's N: its chunks stay the full round's first
    feature_parts: int = 1  # feature tasks per trial
    require_cuda: bool = True  # in-process work (no pool): cluster.require_cuda


def result_path(fidelity: str, cid: str) -> str:
    return f"results/{fidelity}/{cid}.json"


def read_results(out: Directory, fidelity: str) -> dict[str, dict]:
    """The finished trials of a round, by config id."""
    found = {}
    for name in out.listdir(f"results/{fidelity}") if out.exists(f"results/{fidelity}") else []:
        if name.endswith(".json"):
            found[name[:-5]] = out.read_json(f"results/{fidelity}/{name}")
    return found


def _plain(value: Any) -> Any:
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return None if math.isnan(value) else value
    if isinstance(value, np.integer):
        return int(value)
    return value


def trial_row(config: SamplerConfig) -> dict[str, Any]:
    """What a trial's row (and its MLflow params) says about its configuration."""
    return {**config.to_dict(), "config_id": config.id, "name": config.name, "w": config.w, "s": config.s}


def _class_grid(samples: Directory, plans) -> bytes:
    """class_grid_png of the whole set, reading one chunk at a time: the first GRID_PER_CLASS images
    of each class are all the grid can show."""
    first: dict[int, list] = {}
    for plan in plans:
        images, labels, _ = read_chunk(samples, plan)
        for image, label in zip(images, labels.tolist()):
            if len(first.setdefault(label, [])) < GRID_PER_CLASS:
                first[label].append(image)
    labels = np.asarray([c for c in sorted(first) for _ in first[c]])
    return class_grid_png(np.stack([im for c in sorted(first) for im in first[c]]), labels,
                          per_class=GRID_PER_CLASS, max_classes=GRID_CLASSES)


def _executor(inputs: TrialInputs):
    if inputs.pool is None:
        return InProcess(WorkerSpec(stage="sweep", require_cuda=inputs.require_cuda))

    return Pool.attach(inputs.pool)


def run_trial(config: SamplerConfig, fidelity: str, num_images: int, inputs: TrialInputs) -> dict[str, Any]:
    """Generate and score one configuration at one fidelity; returns (and writes) its row."""
    out = Directory.at(inputs.out_uri)
    cid = config.id
    started = time.perf_counter()
    executor = _executor(inputs)
    plans = plan_chunks(num_images, inputs.chunk_size, prefix=inputs.screen_images)
    samples = out.subdir(f"{SAMPLES_DIR}/{cid}")
    if out.exists(f"{SAMPLES_DIR}/{cid}"):
        remove_temporaries(samples)
    units = samples.subdir(UNITS_DIR)
    sampled = sample_chunks(executor, config, plans, inputs.diffusion[config.p_uncond], samples,
                            classifier_location=inputs.classifier, batch_size=inputs.batch_size, where_dir=units.uri)
    references = load_references(inputs.reference_stats)
    names = tuple(n for n in inputs.eval_cfg.extractors if n in references)
    notes = [f"{n}: no reference statistics; skipped" for n in inputs.eval_cfg.extractors if n not in references]
    tasks = chunk_tasks(samples.uri, plans, inputs.feature_parts, eval_cfg=inputs.eval_cfg, evalnet=inputs.evalnet,
                        gathering=SCORING.for_stream(num_images), names=names)
    gathered, feature_infos, more = gather(executor, tasks)
    metrics, protocol = score_gathered(gathered, references, inputs.eval_cfg, seed_range(config.seed, num_images))
    if not out.exists(f"grids/{cid}.png"):
        out.write_bytes(f"grids/{cid}.png", _class_grid(samples, plans))
    made, features = where_records(units, plans), [where_record(info) for info in feature_infos]
    where = unit_location()
    row = {
        **trial_row(config), "fidelity": fidelity, "num_images": int(num_images),
        "nfe": int(nfe_per_image(config, inputs.num_train_timesteps)),
        "device": ",".join(sorted({str(u["device"]) for u in made if u.get("device")})) or "",
        "images_per_s": sampled.images_per_worker_s or None,  # per sampler actor: images / busy seconds
        "generated": int(sampled.generated_images), "generate_seconds": round(sampled.seconds, 3),
        "seconds": round(time.perf_counter() - started, 3),
        "dataset": inputs.dataset, "protocol": protocol_id(protocol),
        "protocol_json": json.dumps(protocol, sort_keys=True, default=str),
        "notes": "; ".join(notes + more), "grid": f"grids/{cid}.png",
        "node_id": where["node_id"], "node_type": where["node_type"],
        "sample_nodes": json.dumps(count_by(made, "node_id"), sort_keys=True),
        "sample_node_types": json.dumps(count_by(made, "node_type"), sort_keys=True),
        "feature_nodes": json.dumps(count_by(features, "node_id"), sort_keys=True),
        "feature_node_types": json.dumps(count_by(features, "node_type"), sort_keys=True),
        "sample_units": json.dumps(made, sort_keys=True), "feature_units": json.dumps(features, sort_keys=True),
        **{k: _plain(v) for k, v in metrics.items()},
    }
    out.write_json(result_path(fidelity, cid), row)
    return row


def trainable(config: dict[str, Any], inputs: TrialInputs, fidelity: str, num_images: int) -> None:
    """The Tune function trainable: one trial, its numeric results reported to Tune."""
    from ray import tune

    row = run_trial(SamplerConfig.from_dict(config["spec"]), fidelity, num_images, inputs)
    tune.report({k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
