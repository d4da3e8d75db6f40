"""The driver side: check the cluster can hold the workers, run the TorchTrainer with the
stage's partial output as storage (so a re-run resumes from its checkpoints), and hand back
the final training state."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import pyarrow.fs as pafs

from pipeline.training.loop import train_loop
from pipeline.training.spec import TrainSpec
from pipeline.training.state import TrainState
from pipeline.training.task import Task


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the step and images seen."""


class NotEnoughResourcesError(RuntimeError):
    """More training workers than the Ray cluster can place."""


@dataclass
class TrainResult:
    state: TrainState          # final model, EMA, optimizer, per-step losses, periodic records
    checkpoint_path: str       # where Ray Train keeps the final checkpoint
    seconds: float


def check_resources(spec: TrainSpec) -> None:
    import ray

    have = ray.cluster_resources()
    cpus, gpus = have.get("CPU", 0.0), have.get("GPU", 0.0)
    if cpus < spec.num_workers:
        raise NotEnoughResourcesError(
            f"{spec.num_workers} training workers need {spec.num_workers} CPUs (one each) but the Ray cluster has "
            f"{cpus:g}: lower num_workers or add nodes")
    if spec.use_gpu and gpus < spec.num_workers:
        raise NotEnoughResourcesError(
            f"{spec.num_workers} GPU training workers need {spec.num_workers} GPUs but the Ray cluster has {gpus:g}")


def fit(task: Task, spec: TrainSpec, data: str, storage: str, name: str = "train",
        filesystem: Optional[pafs.FileSystem] = None) -> TrainResult:
    """Train `task` on the shard directory `data` (path or URI). `storage` (a local path, a URI,
    or a path in `filesystem`) keeps Ray Train's checkpoints; calling again with the same storage
    and name resumes from the last one."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    spec.validate()
    check_resources(spec)
    started = time.time()
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"spec": spec, "task": task, "data": data},
        scaling_config=ScalingConfig(num_workers=spec.num_workers, use_gpu=spec.use_gpu),
        run_config=RunConfig(
            name=name, storage_path=storage, storage_filesystem=filesystem,
            failure_config=FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=spec.keep_checkpoints),
        ),
    )
    result = trainer.fit()
    metrics = result.metrics or {}
    if "nonfinite_loss" in metrics:
        kept = f" ({result.checkpoint.path})" if result.checkpoint is not None else " (none was written yet)"
        raise NonFiniteLossError(metrics["nonfinite_loss"] + kept)
    with result.checkpoint.as_directory() as directory:
        state = TrainState.load(directory)
    return TrainResult(state=state, checkpoint_path=result.checkpoint.path, seconds=time.time() - started)
