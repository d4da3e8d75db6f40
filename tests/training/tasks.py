"""Tasks for tests; importable on Ray workers (the repository root is on their PYTHONPATH)."""
from dataclasses import dataclass, field

import torch

from pipeline.training.diffusion import DiffusionTask
from pipeline.training.evalnet import EvalnetTask
from pipeline.training.task import Task


@dataclass(frozen=True)
class NanOnRankAfterSteps(EvalnetTask):
    """EvalNet whose loss turns NaN on one rank at its `bad_step`-th step (1-based)."""

    bad_rank: int = 1
    bad_step: int = 1
    steps: list = field(default_factory=list)  # calls on this worker (the list itself is mutable)

    def loss(self, model, images, labels, generator):
        loss = super().loss(model, images, labels, generator)
        self.steps.append(1)
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        if rank == self.bad_rank and len(self.steps) >= self.bad_step:
            return loss * float("nan")
        return loss


@dataclass(frozen=True)
class ShardRecordingTask(DiffusionTask):
    """DiffusionTask that, at its first step on each worker, writes `<out_dir>/rank<r>.json`: the
    node it runs on, the shards its data stream takes in the first two epochs (the loader's own
    shard order and rank split) and whether the loop's first batch is that stream's first batch."""

    data: str = ""
    out_dir: str = ""
    seed: int = 0

    def loss(self, model, images, labels, generator):
        if not self.runtime.get("recorded"):
            self.runtime["recorded"] = True
            self._record(images, labels)
        return super().loss(model, images, labels, generator)

    def _record(self, images, labels):
        import itertools
        import json
        import os

        import ray

        from pipeline.data.loader import ShardBatches, ShardedDataset, StreamSpec, _split_by_rank, make_loader

        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        spec = StreamSpec(split="train", batch_size=images.shape[0], rank=rank, world_size=world, seed=self.seed)
        dataset = ShardedDataset(self.data)
        per_epoch = len(dataset.shards("train"))
        urls = itertools.islice(ShardBatches(dataset, spec)._shard_urls(), 2 * per_epoch)
        order = [item["url"] for item in urls]
        taken = list(_split_by_rank(rank, world)(enumerate(order)))  # the loader's rank split, with positions
        first_images, first_labels = next(iter(make_loader(dataset, spec)))
        record = {"rank": rank, "world": world, "node": ray.get_runtime_context().get_node_id(),
                  "epochs": [[u for i, u in taken if i // per_epoch == e] for e in range(2)],
                  "first_batch_matches": bool(torch.equal(first_images, images.cpu()) and
                                              torch.equal(first_labels, labels.cpu())),
                  "first_batch_sum": float(images.sum())}
        with open(os.path.join(self.out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(record, f)


class SmallConvNet(torch.nn.Module):
    """Conv, ReLU, linear: no normalisation layer, so a sample's gradient does not depend on
    the other samples of the batch (BatchNorm's would)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.head = torch.nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).flatten(1))


@dataclass(frozen=True)
class FixedGlobalBatch(Task):
    """Every step trains on one fixed global batch of `global_batch` random images (seeded by
    `data_seed`, the loader's images are ignored), split over the ranks in rank order: rank r
    of W takes rows [r B/W, (r+1) B/W). With gradients averaged across ranks, W workers take
    exactly the steps one worker takes on the whole batch."""

    global_batch: int = 64
    data_seed: int = 1234

    def build_model(self):
        return SmallConvNet()

    def loss(self, model, images, labels, generator):
        import torch.nn.functional as F

        distributed = torch.distributed.is_initialized()
        rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if distributed else (0, 1)
        g = torch.Generator().manual_seed(self.data_seed)
        x = torch.randn(self.global_batch, 3, 8, 8, generator=g)
        y = torch.randint(0, 10, (self.global_batch,), generator=g)
        per = self.global_batch // world
        mine = slice(rank * per, (rank + 1) * per)
        return F.cross_entropy(model(x[mine].to(images.device)), y[mine].to(images.device))
