"""The driver side: wait until the cluster can place the workers (pipeline.resources), run the
TorchTrainer with the stage's partial output as storage (so a re-run resumes from its
checkpoints), and hand back the final training state."""
from __future__ import annotations

import functools
import posixpath
import time
from dataclasses import dataclass
from typing import Optional

from pipeline.resources import Placement, check_cuda, refuse_if_never_placeable, wait_until_placeable
from pipeline.training.loop import checkpoint_name, newest_state, train_loop
from pipeline.training.spec import TrainSpec
from pipeline.training.state import TrainState
from pipeline.training.task import Task

# Function-local imports: they bring in Ray and webdataset, which importing this module does not need.


STOP_FILE = "stopped_early.txt"
INTEGRITY_FILE = "shard_integrity_error.txt"  # a worker read a shard that differs from its manifest


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the step and images seen."""


@dataclass
class TrainResult:
    state: TrainState          # final model, EMA, optimizer, per-step losses, periodic records
    checkpoint_path: str       # where Ray Train keeps the final checkpoint
    seconds: float


def place_workers(spec: TrainSpec, placement: Placement) -> dict:
    """Wait until the cluster can place every worker (at once on a local instance, which never
    grows) and check CUDA where they get GPUs; the TorchTrainer's scaling arguments."""
    from ray.train import ScalingConfig
    from ray.train.torch import TorchConfig

    wait_until_placeable(spec.units, placement)
    cuda = check_cuda(spec.units, placement) if spec.use_gpu else False
    scaling = ScalingConfig(num_workers=spec.num_workers, use_gpu=spec.use_gpu,
                            resources_per_worker=spec.units.bundle())
    # GPUs without CUDA (require_cuda false: simulated clusters) cannot run NCCL: gloo on CPU
    backend = TorchConfig(backend="gloo") if spec.use_gpu and not cuda else TorchConfig()
    return {"scaling_config": scaling, "torch_config": backend}


def check_shards(data: str, split: str, readers: int = 1) -> int:
    """Before any worker starts: the shard directory has a manifest, every shard of `split`
    is present with the size the manifest gives (workers check sha256 as they read), and there
    are at least `readers` shards (each worker's loader processes read disjoint shards). Returns
    the number of images of the split."""
    from pipeline.data.loader import ShardedDataset, ShardIntegrityError

    try:
        dataset = ShardedDataset(data)
    except (FileNotFoundError, OSError) as error:
        raise ShardIntegrityError(f"{data} is not a finished shard directory (no readable manifest: {error})") from None
    entries = dataset.shards(split)
    if not entries:
        raise ShardIntegrityError(f"{data} has no '{split}' shards to train on")
    if len(entries) < readers:
        raise ShardIntegrityError(f"{data} has {len(entries)} '{split}' shards but {readers} readers (workers x "
                                  "loader processes) each need their own: re-shard with a smaller "
                                  "data.samples_per_shard, or use fewer workers or loader_workers")
    problems = dataset.size_problems(split)
    if problems:
        raise ShardIntegrityError(f"{len(problems)} of {len(entries)} '{split}' shards in {data} fail verification: "
                                  + "; ".join(problems[:5]) + (" ..." if len(problems) > 5 else "")
                                  + ". Re-run the shard stage (--force shard) to rebuild them")
    return dataset.num_images(split)


@functools.lru_cache(maxsize=None)
def _trainer_class():
    """TorchTrainer that leaves SIGINT to the caller: Ray Train V2's fit, in the main thread,
    installs its own SIGINT handler (never restored) that aborts the run and exits 0. This one
    keeps the controller's handle instead, so `_fit_abortably` can stop it on any interruption."""
    from ray.train.torch import TorchTrainer

    class AbortableTorchTrainer(TorchTrainer):
        controller = None

        def _register_sigint_handler(self, controller):
            self.controller = controller

    return AbortableTorchTrainer


def _fit_abortably(trainer) -> None:
    """`trainer.fit()`; when interrupted (SIGTERM/SIGINT arrive as KeyboardInterrupt), the
    controller is killed at once, and with it the worker group it owns. Checkpoints written so
    far stay in the run directory for the next attempt."""
    import ray

    try:
        trainer.fit()
    except KeyboardInterrupt:
        if trainer.controller is not None:
            ray.kill(trainer.controller, no_restart=True)
        raise


def fit(task: Task, spec: TrainSpec, data: str, storage: str, name: str = "train",
        placement: Optional[Placement] = None) -> TrainResult:
    """Train `task` on the shard directory `data` (path or URI). `storage` (a local path or a
    URI) keeps Ray Train's checkpoints under `name`; calling again with the same storage and
    name resumes from the last one. `placement` says how to wait for the cluster (default: a
    local instance that never grows)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig

    from pipeline.store import resolve

    spec.validate()
    placement = placement or Placement(stage=name)
    refuse_if_never_placeable(spec.units, placement)  # before anything else, as it cannot change
    check_shards(data, spec.split, readers=spec.num_workers * max(1, spec.loader_workers))
    scaling = place_workers(spec, placement)
    run_dir = posixpath.join(storage.rstrip("/"), name)
    stop_file, integrity_file = posixpath.join(run_dir, STOP_FILE), posixpath.join(run_dir, INTEGRITY_FILE)
    stop_fs, stop_path = resolve(stop_file)
    integrity_path = resolve(integrity_file)[1]
    for path in (stop_path, integrity_path):
        if stop_fs.get_file_info(path).is_file:  # left by an earlier stopped attempt
            stop_fs.delete_file(path)
    started = time.time()
    trainer = _trainer_class()(
        train_loop,
        train_loop_config={"spec": spec, "task": task, "data": data, "run_dir": run_dir,
                           "stop_file": stop_file, "integrity_file": integrity_file, "stage": placement.stage,
                           "require_cuda": placement.require_cuda},
        **scaling,
        run_config=RunConfig(
            name=name, storage_path=storage,
            failure_config=FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=spec.keep_checkpoints),
        ),
    )
    _fit_abortably(trainer)
    if stop_fs.get_file_info(integrity_path).is_file:
        from pipeline.data.loader import ShardIntegrityError

        with stop_fs.open_input_stream(integrity_path) as f:
            raise ShardIntegrityError(f"{f.read().decode()} (found while training; not retried: re-reading cannot "
                                      "heal it). Re-run the shard stage (--force shard) to rebuild the shards")
    if stop_fs.get_file_info(stop_path).is_file:
        with stop_fs.open_input_stream(stop_path) as f:
            raise NonFiniteLossError(f"{f.read().decode()} in {run_dir}")
    state = newest_state(run_dir)  # the final checkpoint, whether or not Ray has taken up its report yet
    if state is None or state.nimg < spec.total_nimg:
        raise RuntimeError(f"training ended without its final checkpoint in {run_dir}")
    return TrainResult(state=state, checkpoint_path=posixpath.join(run_dir, checkpoint_name(state.nimg)),
                       seconds=time.time() - started)
