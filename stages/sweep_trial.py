"""One sweep trial: sample N images of one sampler configuration and score them.

Not a stage: the body of the sweep stage's Ray Tune trials (stages/sweep.py runs them). It runs
inside a trial (any node): it reads the models and reference statistics by store URI, calls the
sampling library (pipeline.generation: load_models, generate, make_extractors, score; the same
code and protocol as the sample/evaluate stages) and writes, into the sweep's partial output,
    results/<fidelity>/<config_id>.json   the trial's row (written last: its presence means done)
    samples/<config_id>.npz               the screened images, so the full-N round only generates the rest
    grids/<config_id>.png                 one row per class
Image i of a configuration depends only on (seed, i), so the first `screen_images` images of the
full round are the screening round's images: the full round generates indices from there on.
"""
from __future__ import annotations

import io
import json
import math
import time
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from pipeline.generation import (SamplerConfig, generate, load_models, load_references, make_extractors,
                                 nfe_per_image, protocol_id, score, seed_range)
from pipeline.generation.grid import class_grid_png
from pipeline.store import Directory

SCREEN, FULL = "screen", "full"


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
    use_gpu: bool = False
    num_threads: int = 1
    num_train_timesteps: int = 1000  # diffusion.timesteps (NFE counts of respaced samplers)


def result_path(fidelity: str, cid: str) -> str:
    return f"results/{fidelity}/{cid}.json"


def read_results(out: Directory, fidelity: str) -> dict[str, dict]:
    """The finished trials of a round, by config id."""
    found = {}
    for name in out.listdir(f"results/{fidelity}") if out.exists(f"results/{fidelity}") else []:
        if name.endswith(".json"):
            found[name[:-5]] = out.read_json(f"results/{fidelity}/{name}")
    return found


def _load_prefix(out: Directory, cid: str, num_images: int) -> tuple[np.ndarray, np.ndarray] | None:
    rel = f"samples/{cid}.npz"
    if not out.exists(rel):
        return None
    with np.load(io.BytesIO(out.read_bytes(rel))) as z:
        images, labels = z["images"], z["labels"]
    return images[:num_images], labels[:num_images]


def _save_samples(out: Directory, cid: str, images: np.ndarray, labels: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, images=images, labels=labels)
    out.write_bytes(f"samples/{cid}.npz", buf.getvalue())


def _plain(value: Any) -> Any:
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return None if math.isnan(value) else value
    if isinstance(value, np.integer):
        return int(value)
    return value


def _node_id() -> str:
    """The Ray node the trial ran on (provenance; empty outside Ray)."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    except Exception:  # noqa: BLE001 - provenance only
        return ""


def trial_row(config: SamplerConfig) -> dict[str, Any]:
    """What a trial's row (and its MLflow params) says about its configuration."""
    return {**config.to_dict(), "config_id": config.id, "name": config.name, "w": config.w, "s": config.s}


def run_trial(config: SamplerConfig, fidelity: str, num_images: int, inputs: TrialInputs) -> dict[str, Any]:
    """Generate and score one configuration at one fidelity; returns (and writes) its row."""
    torch.set_num_threads(max(1, inputs.num_threads))
    device = "cuda" if inputs.use_gpu and torch.cuda.is_available() else "cpu"
    out = Directory.at(inputs.out_uri)
    cid = config.id
    started = time.perf_counter()
    prefix = _load_prefix(out, cid, num_images)
    have = 0 if prefix is None else len(prefix[0])
    images, labels = prefix if prefix is not None else (None, None)
    gen_seconds, generated = 0.0, num_images - have
    if generated > 0:
        models = load_models(config, inputs.diffusion[config.p_uncond], inputs.classifier, device=device)
        t0 = time.perf_counter()
        new_images, new_labels = generate(config, models, np.arange(have, num_images), inputs.batch_size)
        gen_seconds = time.perf_counter() - t0
        images = new_images if images is None else np.concatenate([images, new_images])
        labels = new_labels if labels is None else np.concatenate([labels, new_labels])
        if fidelity == SCREEN:  # the full round starts from these
            _save_samples(out, cid, images, labels)
    extractors, notes = make_extractors(inputs.eval_cfg, inputs.evalnet, device=device)
    references = load_references(inputs.reference_stats)
    metrics, protocol = score(images, labels, extractors, references, inputs.eval_cfg,
                              seed_range(config.seed, num_images))
    if not out.exists(f"grids/{cid}.png"):
        out.write_bytes(f"grids/{cid}.png", class_grid_png(images, labels))
    row = {
        **trial_row(config), "fidelity": fidelity, "num_images": int(num_images),
        "nfe": int(nfe_per_image(config, inputs.num_train_timesteps)), "device": device,
        "images_per_s": generated / gen_seconds if gen_seconds > 0 else None,
        "generated": int(generated), "generate_seconds": round(gen_seconds, 3),
        "seconds": round(time.perf_counter() - started, 3),
        "dataset": inputs.dataset, "protocol": protocol_id(protocol),
        "protocol_json": json.dumps(protocol, sort_keys=True, default=str),
        "notes": "; ".join(notes) if notes else "", "grid": f"grids/{cid}.png", "node_id": _node_id(),
        **{k: _plain(v) for k, v in metrics.items()},
    }
    out.write_json(result_path(fidelity, cid), row)
    return row


def trainable(config: dict[str, Any], inputs: TrialInputs, fidelity: str, num_images: int) -> None:
    """The Tune function trainable: one trial, its numeric results reported to Tune."""
    from ray import tune

    row = run_trial(SamplerConfig.from_dict(config["spec"]), fidelity, num_images, inputs)
    tune.report({k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
