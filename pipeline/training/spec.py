"""What a training run is asked to do, counted in images like EDM2's nimg."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from pipeline.arguments import ArgumentError


def check_batch_split(batch_size: int, num_workers: int) -> None:
    """Every worker takes an equal share of the global batch."""
    if batch_size % num_workers:
        raise ArgumentError("batch_size", batch_size, f"not divisible by `num_workers`: the global batch must split "
                                                      f"evenly over `num_workers` = {num_workers}")


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
    use_gpu: bool = False
    snapshot_kimg: tuple[float, ...] = ()  # keep a copy of the first EMA (the model without EMA) at these kimg
    max_failures: int = 2            # worker restarts from the last checkpoint before giving up
    crash: Optional[WorkerCrash] = field(default=None, compare=False)

    @property
    def total_nimg(self) -> int:
        return int(round(self.kimg * 1000))

    @property
    def per_worker_batch(self) -> int:
        return self.batch_size // self.num_workers

    def validate(self) -> None:
        if self.num_workers < 1:
            raise ValueError("num_workers must be >= 1")
        check_batch_split(self.batch_size, self.num_workers)
        for name in ("kimg", "checkpoint_kimg", "log_kimg"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
