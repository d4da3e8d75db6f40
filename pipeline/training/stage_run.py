"""What the three training stages (train_diffusion, train_classifier, train_evalnet) share
around `fit`: training in the stage's partial output under the cluster policy, the history
and the weights in MLflow, the model registry, and the summary.

`ctx` is the stage's context (pipeline.run.StageContext: out, log, tracker, label, key); it is
used, not imported, so this library knows no runner.
"""
from __future__ import annotations

import posixpath
from typing import Any, Optional

from pipeline.resources import Placement, node_tags
from pipeline.training.spec import TrainSpec
from pipeline.training.task import Task
from pipeline.training.trainer import TrainResult, fit


def fit_in_stage(ctx, cluster_cfg, task: Task, spec: TrainSpec, data: str, name: str,
                 tag_prefix: str = "") -> TrainResult:
    """`fit` with Ray Train's run directory `name` inside the stage's partial output, so a
    re-run of an interrupted stage resumes from its checkpoints; it waits for the cluster as
    `cluster_cfg` (the `cluster` config section) says. The nodes and node types its workers ran
    on become MLflow tags (`<tag_prefix>node_ids`, `<tag_prefix>node_types`)."""
    placement = Placement.from_config(cluster_cfg, stage=ctx.label, log=ctx.log)
    ctx.log(f"{spec.units.describe()}, {spec.precision}, {spec.kimg:g} kimg at a global batch of {spec.batch_size}")
    result = fit(task, spec, data, ctx.out.local_path or ctx.out.uri, name=name, placement=placement)
    if result.state.resumes:
        ctx.log(f"resumed from checkpoints at {result.state.resumes} images seen")
    ctx.set_tags(node_tags(result.state.workers, tag_prefix))
    return result


def log_history(ctx, state, prefix: str = "") -> None:
    """Per-step loss, then the periodic records (loss, loss per t quartile, images/s, lr, grad
    norm), in few MLflow batches (one call per step is slow)."""
    rows = [(int(nimg), {f"{prefix}train_loss": loss}) for nimg, loss in state.losses]
    for record in state.records:
        metrics = {("loss_mean" if k == "loss" else k): v for k, v in record.items() if k != "nimg"}
        rows.append((int(record["nimg"]), {f"{prefix}{k}": v for k, v in metrics.items()}))
    ctx.tracker.log_metric_rows(rows)


def log_files(ctx, names: list[str], artifact_dir: Optional[str] = None) -> None:
    """Log files of the stage's output as MLflow artifacts (under artifact_dir, keeping their
    subdirectories)."""
    for rel in names:
        with ctx.out.local_file(rel) as path:
            parts = [p for p in (artifact_dir, posixpath.dirname(rel)) if p]
            ctx.log_artifact(path, posixpath.join(*parts) if parts else None)


def register(ctx, name: str, artifact_path: str, tags: dict[str, Any], description: str) -> Optional[str]:
    """Register the logged weights as a new version of `name` in the MLflow model registry, with
    the run and the store key; "name/version", or None with a logged note where the tracking
    backend refuses (a server without a registry, permissions)."""
    try:
        registered = ctx.tracker.register_model(name, artifact_path, {"store.key": ctx.key, **tags}, description)
        ctx.log(f"registered model {registered}")
        return registered
    except Exception as error:
        ctx.log(f"note: the model was not registered in the MLflow model registry ({type(error).__name__}: {error})")
        return None


def summary(result: TrainResult, spec: TrainSpec) -> dict[str, Any]:
    """The fields every training stage's summary has."""
    state = result.state
    images_per_s = [r["images_per_s"] for r in state.records]
    return {
        "nimg": state.nimg, "final_loss": state.losses[-1][1] if state.losses else None,
        "images_per_s": sum(images_per_s) / len(images_per_s) if images_per_s else None,
        "train_seconds": round(result.seconds, 2), "num_workers": spec.num_workers, "seed": spec.seed,
        "resumed_from_nimg": state.resumes, "precision": spec.precision, "use_gpu": spec.use_gpu,
        "units": state.workers,  # where each worker ran: rank, node_id, node_type, since_nimg
    }
