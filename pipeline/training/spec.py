"""What a training run is asked to do, counted in images like EDM2's nimg, and how a training
config section (train, classifier, evalnet) becomes one."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from pipeline.arguments import ArgumentError


def check_batch_split(batch_size: int, num_workers: int) -> None:
    """Every worker takes an equal share of the global batch."""
    if batch_size % num_workers:
        raise ArgumentError("batch_size", batch_size, f"not divisible by `num_workers`: the global batch must split "
                                                      f"evenly over `num_workers` = {num_workers}")

from pipeline.resources import Units

PRECISIONS = ("fp32", "bf16", "fp16")  # pipeline.training.precision; kept here so the plan imports no torch


@dataclass(frozen=True)
class WorkerCrash:
    """Test hook: worker `rank` calls os._exit once it has seen `after_nimg` images, only
    while `marker` does not exist (it creates it first, so the restarted worker goes on)."""

    rank: int
    after_nimg: int
    marker: str


@dataclass(frozen=True)
class TrainSpec:
    kimg: float                      # duration, thousands of images (global, across workers)
    batch_size: int                  # global batch in images; each of num_workers gets an equal share
    lr: float
    num_workers: int = 1
    seed: int = 0
    warmup_kimg: float = 0.0         # linear learning-rate warm-up from 0
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: Optional[float] = None  # max global gradient norm; None: no clipping
    ema_decays: tuple[float, ...] = ()  # one EMA copy of the weights per decay, updated every step
    checkpoint_kimg: float = 10.0    # a checkpoint (and a report to Ray) every this many kimg, and at the end
    keep_checkpoints: int = 2
    log_kimg: float = 1.0            # one history record (mean loss, images/s, lr) every this many kimg
    split: str = "train"
    use_gpu: bool = False            # each worker asks Ray for one GPU and trains on CUDA
    cpus_per_worker: float = 1.0     # CPUs each worker asks Ray for
    loader_workers: int = 0          # data-loading processes per worker (0: read in the training process)
    precision: str = "fp32"          # fp32 | bf16 | fp16 autocast (pipeline.training.precision)
    snapshot_kimg: tuple[float, ...] = ()  # keep a copy of the first EMA (the model without EMA) at these kimg
    max_failures: int = 2            # worker restarts from the last checkpoint before giving up
    crash: Optional[WorkerCrash] = field(default=None, compare=False)

    @property
    def total_nimg(self) -> int:
        return int(round(self.kimg * 1000))

    @property
    def per_worker_batch(self) -> int:
        return self.batch_size // self.num_workers

    @property
    def units(self) -> Units:
        """What each training worker asks Ray for, and how many run at once."""
        return Units("training worker", self.num_workers, cpus=self.cpus_per_worker, gpus=1.0 if self.use_gpu else 0.0,
                     knob="num_workers", gpu_knob="use_gpu")

    def validate(self) -> None:
        if self.num_workers < 1:
            raise ValueError("num_workers must be >= 1")
        check_batch_split(self.batch_size, self.num_workers)
        for name in ("kimg", "checkpoint_kimg", "log_kimg", "cpus_per_worker"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.loader_workers < 0:
            raise ValueError("loader_workers must be >= 0")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}: expected one of {PRECISIONS}")


def train_spec(section, kimg: Optional[float] = None, snapshot_kimg: tuple[float, ...] = ()) -> TrainSpec:
    """The TrainSpec of a training config section (`train`, `classifier` or `evalnet`), read by
    field name. `kimg` overrides the duration (the smaller autoguidance guide).

    One rule for all three: warm-up and checkpoint period never exceed the run, and the
    history gets about 50 records (at least one step apart). A section without EMA trains
    without one."""
    kimg = float(kimg if kimg is not None else section.kimg)
    batch = section.batch_size
    return TrainSpec(
        kimg=kimg, batch_size=batch, lr=section.lr, num_workers=section.num_workers, seed=section.seed,
        warmup_kimg=min(section.warmup_kimg, kimg), weight_decay=section.weight_decay, grad_clip=section.grad_clip,
        ema_decays=tuple(getattr(section, "ema_decays", ())), checkpoint_kimg=min(section.checkpoint_kimg, kimg),
        keep_checkpoints=section.keep_checkpoints, log_kimg=max(kimg / 50, batch / 1000), use_gpu=section.use_gpu,
        cpus_per_worker=section.cpus_per_worker, loader_workers=section.loader_workers, precision=section.precision,
        snapshot_kimg=tuple(sorted(set(snapshot_kimg))))
