"""The per-worker loop Ray Train runs: DDP, AdamW with linear warm-up, gradient clipping, EMA,
mixed precision (pipeline.training.precision), checkpoints every N images. Resuming is exact:
the data stream restarts at images seen per rank, step randomness is derived from (seed, rank,
images seen), and everything else (the fp16 loss scale included) is in the checkpoint."""
from __future__ import annotations

import copy
import math
import os
import posixpath
import re
import tempfile
import time

import torch
import torch.distributed as dist

from pipeline.resources import this_node, unit_device
from pipeline.training.precision import MixedPrecision
from pipeline.training.seeding import seed_global_rng, step_generator
from pipeline.training.spec import TrainSpec, WorkerCrash
from pipeline.training.state import STATE_FILE, TrainState
from pipeline.training.task import Task

# Function-local imports: they bring in Ray and webdataset, which importing this module does not need.


def lr_at(spec: TrainSpec, nimg: int) -> float:
    """Linear warm-up over warmup_kimg, then constant; `nimg` counts the step's own images."""
    if spec.warmup_kimg <= 0:
        return spec.lr
    return spec.lr * min(1.0, nimg / (spec.warmup_kimg * 1000))


def crossed(before: int, after: int, every: float) -> bool:
    """Whether a multiple of `every` images lies in (before, after]."""
    return math.floor(after / every) > math.floor(before / every)


def mean_across_workers(value: torch.Tensor) -> float:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        value = value.detach().clone().float()
        dist.all_reduce(value)
        value /= dist.get_world_size()
    return float(value)


def any_worker(flag: bool, device: torch.device) -> bool:
    """Whether `flag` is set on any rank (every rank must call it at the same step; `device` is
    the rank's training device, where NCCL wants the tensor)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        value = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())
    return flag


def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1.0 - decay)
        for e, b in zip(ema.buffers(), model.buffers()):
            e.copy_(b)


def worker_nodes(rank: int, world: int, since_nimg: int) -> list[dict]:
    """Every rank's Ray node (pipeline.resources.this_node), gathered on every rank, in rank order."""
    mine = {"rank": rank, **this_node(), "since_nimg": since_nimg}
    if not (dist.is_available() and dist.is_initialized() and world > 1):
        return [mine]
    every: list = [None] * world
    dist.all_gather_object(every, mine)
    return every


def maybe_crash(crash: WorkerCrash | None, rank: int, nimg: int) -> None:
    if crash and rank == crash.rank and nimg >= crash.after_nimg and not os.path.exists(crash.marker):
        open(crash.marker, "w").close()
        os._exit(1)


def checkpoint_name(nimg: int) -> str:
    return f"checkpoint_{nimg:012d}"


def newest_state(run_dir: str) -> TrainState | None:
    """The state of the newest readable checkpoint in the run directory.

    Ray Train takes up reports asynchronously, so when a worker or the driver dies shortly
    after a checkpoint was written, Ray may resume from an older one (or, after the driver
    died, from none). Checkpoints are named by images seen, so the newest is found by name;
    one that cannot be read (cut short while being copied) is skipped."""
    import pyarrow.fs as pafs

    from pipeline.store import resolve

    fs, path = resolve(run_dir)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    names = sorted((i.base_name for i in infos if i.type == pafs.FileType.Directory
                    and re.fullmatch(r"checkpoint_\d{12}", i.base_name)), reverse=True)
    for name in names:
        try:
            with fs.open_input_stream(posixpath.join(path, name, STATE_FILE)) as f:
                return TrainState.from_bytes(f.read())
        except Exception:  # incomplete copy: try the previous one
            continue
    return None


def write_stop_reason(location: str, reason: str) -> None:
    """Reports are taken up by the controller asynchronously and may be lost when the loop
    returns, so the reason for stopping early goes to a file the driver reads."""
    from pipeline.store import resolve

    fs, path = resolve(location)
    fs.create_dir(posixpath.dirname(path), recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(reason.encode())


def train_loop(config: dict) -> None:
    import ray.train
    import ray.train.torch
    from ray.train import Checkpoint

    from pipeline.data.loader import ShardIntegrityError, StreamSpec, make_loader

    spec: TrainSpec = config["spec"]
    task: Task = config["task"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = unit_device(config["stage"], spec.use_gpu, config["require_cuda"], ray.train.torch.get_device)
    precision = MixedPrecision(spec.precision, device)

    torch.manual_seed(spec.seed)
    model = task.build_model()
    state = newest_state(config["run_dir"])
    if state is None and ray.train.get_checkpoint() is not None:
        with ray.train.get_checkpoint().as_directory() as directory:
            state = TrainState.load(directory)
    resuming = state is not None
    if not resuming:
        state = TrainState(precision=spec.precision)
    else:
        if state.precision != spec.precision:
            raise ValueError(f"the checkpoint in {config['run_dir']} was trained in {state.precision}, this run asks "
                             f"for {spec.precision}: resume with the precision it was started with")
        model.load_state_dict(state.model)
        task.load_state_dict(state.task)
        state.resumes.append(state.nimg)
    state.workers = [*state.workers, *worker_nodes(rank, world, state.nimg)]
    ddp_model = ray.train.torch.prepare_model(model, move_to_device=device)  # moves `model`; DDP when world > 1
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay)
    emas = [copy.deepcopy(model).requires_grad_(False) for _ in spec.ema_decays]
    if resuming:
        optimizer.load_state_dict(state.optimizer)
        precision.load_state_dict(state.scaler)
        for ema, saved in zip(emas, state.ema):
            ema.load_state_dict(saved)
    last_checkpoint_nimg = state.nimg

    stream = StreamSpec(split=spec.split, batch_size=spec.per_worker_batch, rank=rank, world_size=world,
                        num_workers=spec.loader_workers, seed=spec.seed, start_image=state.nimg // world)
    loader = make_loader(config["data"], stream, pin_memory=device.type == "cuda")
    batches = iter(loader)

    def report(metrics: dict, with_checkpoint: bool) -> None:
        if not (with_checkpoint and rank == 0):
            ray.train.report(metrics)
            return
        state.model = model.state_dict()
        state.ema = [ema.state_dict() for ema in emas]
        state.optimizer = optimizer.state_dict()
        state.scaler = precision.state_dict()
        state.task = task.state_dict()
        with tempfile.TemporaryDirectory() as directory:
            state.save(directory)
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(directory),
                             checkpoint_dir_name=checkpoint_name(state.nimg))

    total, window, window_start = spec.total_nimg, [], (time.perf_counter(), state.nimg)
    extras: dict[str, list[float]] = {}  # task.step_metrics() summed over the log window
    ddp_model.train()
    while state.nimg < total:
        # A shard that differs from its manifest cannot heal: rather than raise (Ray Train would
        # restart the workers max_failures times to read it again), every rank stops at this step
        # and the driver raises the error from the file the failing rank wrote.
        try:
            images, labels = next(batches)
            data_error = None
        except ShardIntegrityError as error:
            data_error = error
        if any_worker(data_error is not None, device):
            if data_error is not None:
                write_stop_reason(config["integrity_file"], str(data_error))
            return
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        lr = lr_at(spec, state.nimg + spec.batch_size)
        for group in optimizer.param_groups:
            group["lr"] = lr
        # Layers that draw from torch's global generator (dropout) get a per-step seed as well
        seed_global_rng(spec.seed, rank, state.nimg)
        with precision.autocast():
            loss = task.loss(ddp_model, images, labels, step_generator(spec.seed, rank, state.nimg)).float()
        global_loss = mean_across_workers(loss)  # every rank sees the same value, so all stop together
        if not math.isfinite(global_loss):
            step = state.nimg // spec.batch_size + 1
            if rank == 0:
                kept = (f"the last good checkpoint is kept: {checkpoint_name(last_checkpoint_nimg)} "
                        f"({last_checkpoint_nimg} images)" if last_checkpoint_nimg else "no checkpoint was written yet")
                write_stop_reason(config["stop_file"], f"non-finite loss ({global_loss}) at step {step}, after "
                                                       f"{state.nimg} images seen; training stopped, {kept}")
            return
        optimizer.zero_grad(set_to_none=True)
        grad_norm = precision.backward_and_step(loss, optimizer, model.parameters(), spec.grad_clip)
        for ema, decay in zip(emas, spec.ema_decays):
            update_ema(ema, model, decay)
        for name, (total_value, count) in task.step_metrics().items():
            extras.setdefault(name, [0.0, 0.0])
            extras[name][0] += total_value
            extras[name][1] += count

        before, state.nimg = state.nimg, state.nimg + spec.batch_size
        for kimg in spec.snapshot_kimg:
            if before < kimg * 1000 <= state.nimg:
                source = emas[0] if emas else model
                state.snapshots[str(state.nimg)] = {k: v.detach().cpu().clone() for k, v in source.state_dict().items()}
        state.losses.append([state.nimg, global_loss])
        window.append(global_loss)
        maybe_crash(spec.crash, rank, state.nimg)
        done = state.nimg >= total
        if crossed(before, state.nimg, spec.log_kimg * 1000) or done:
            seconds = time.perf_counter() - window_start[0]
            state.records.append({"nimg": state.nimg, "loss": sum(window) / len(window), "lr": lr,
                                  "grad_norm": float(grad_norm),
                                  "images_per_s": (state.nimg - window_start[1]) / max(seconds, 1e-9),
                                  **{name: total_value / count for name, (total_value, count) in extras.items()
                                     if count}})
            window, window_start, extras = [], (time.perf_counter(), state.nimg), {}
        if crossed(before, state.nimg, spec.checkpoint_kimg * 1000) or done:
            report({"nimg": state.nimg, "loss": global_loss}, with_checkpoint=True)
            last_checkpoint_nimg = state.nimg
