"""Feature statistics gathered on workers and merged: reference statistics over a dataset's shards,
and the metrics' statistics over a sample set's chunks.

A `FeatureTask` is a contiguous run of global sample indices - consecutive chunks of a sample set
(`ChunkRun`) or consecutive shards of a dataset split (`ShardRun`) - and the protocol's gathering
settings (`Gathering`: kept subsample, seed, interval groups). A worker (pipeline.generation.workers)
runs every extractor over its run with its global indices and returns one FeatureAccumulator per
extractor (pipeline.metrics.gathering): moments, kept features, interval-group moments, IS sums and
class-accuracy counts. `gather` merges the parts in index order: kept subsample, IS splits, group
membership and counts are exactly those of the serial pass, moments equal to float64 rounding.

What travels back per task: d^2 float64 moments (x (1 + groups) with intervals: 10 groups at
Inception's d = 2048 are 336 MB, so a task spans several chunks: `split_runs`) and only the kept
features the merged subsample keeps (`Gathering.max_key`, from the stream's known length).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np

from pipeline.data.preprocess import decode_png
from pipeline.generation.chunks import ChunkPlan, read_chunk
from pipeline.metrics import accumulate_features, kept_key_threshold
from pipeline.store import Directory

# Function-local imports: they bring in webdataset, which importing this module does not need.


@dataclass(frozen=True)
class Gathering:
    """How features are gathered (part of the metrics' protocol; pipeline.generation.scoring)."""

    keep: Optional[int]             # kept features for KID and precision/recall (None: all)
    seed: int = 0
    groups: Optional[int] = None    # interval groups (None: no intervals)
    is_splits: int = 10
    max_key: Optional[int] = None   # a worker keeps only keys the merged subsample keeps

    def for_stream(self, num_samples: int) -> "Gathering":
        """These settings for a stream of `num_samples` known up front (sets max_key)."""
        return replace(self, max_key=kept_key_threshold(num_samples, self.keep, self.seed)
                       if self.keep is not None else None)

    def options(self) -> dict[str, Any]:
        return dict(keep=self.keep, seed=self.seed, groups=self.groups, is_splits=self.is_splits,
                    max_key=self.max_key)


@dataclass(frozen=True)
class ChunkRun:
    """Consecutive chunks of a sample set (pipeline.generation.chunks): (index, start, stop) each."""

    directory: str
    plans: tuple[tuple[int, int, int], ...]

    @property
    def start(self) -> int:
        return self.plans[0][1]

    @property
    def label(self) -> str:
        return f"images {self.plans[0][1]}..{self.plans[-1][2] - 1}"


@dataclass(frozen=True)
class ShardRun:
    """Consecutive shards of a dataset split: (shard name, global index of its first image, images to take)."""

    location: str
    split: str
    shards: tuple[tuple[str, int, int], ...]
    batch_size: int = 500

    @property
    def start(self) -> int:
        return self.shards[0][1]

    @property
    def label(self) -> str:
        return f"{self.split} shards {self.shards[0][0]}..{self.shards[-1][0]}"


@dataclass(frozen=True)
class FeatureTask:
    source: Union[ChunkRun, ShardRun]
    eval_cfg: Any                         # pipeline.config.EvalConfig: extractors, weights, batch size
    evalnet: Optional[str]                # train_evalnet output
    gathering: Gathering
    names: Optional[tuple[str, ...]] = None  # the extractors to run (None: every available one)

    def extractor_key(self) -> tuple:
        """What a worker's extractors depend on (its cache key, with the device)."""
        e = self.eval_cfg
        return (tuple(e.extractors), e.inception_weights, bool(e.require_inception), int(e.batch_size), self.evalnet)


def _chunk_batches(run: ChunkRun) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One batch per chunk, as the serial pass over a sample set reads them (chunks.iter_chunks)."""
    directory = Directory.at(run.directory)
    for plan in run.plans:
        images, labels, _ = read_chunk(directory, ChunkPlan(*plan))
        yield images, labels


def _shard_batches(run: ShardRun) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The first `take` images of each shard, verified and decoded (pipeline.data.loader), in batches."""
    from pipeline.data.loader import ShardedDataset, read_shard_samples

    dataset = ShardedDataset(run.location)
    entries = {e.name: e for e in dataset.shards(run.split)}
    for name, _, take in run.shards:
        if name not in entries:
            raise ValueError(f"{run.location}: no {run.split} shard {name} in shards.parquet")
        samples = read_shard_samples(dataset, entries[name])[:take]
        for begin in range(0, len(samples), run.batch_size):
            part = samples[begin:begin + run.batch_size]
            yield (np.stack([decode_png(s["png"]) for s in part]),
                   np.asarray([s["cls"] for s in part], dtype=np.int64))


def extract(task: FeatureTask, extractors: Sequence) -> dict:
    """Run on a worker: {extractor name: FeatureAccumulator} of the task's run of samples."""
    chosen = [e for e in extractors if task.names is None or e.name in task.names]
    if not chosen:
        raise ValueError(f"none of the extractors {task.names} is available on this worker")
    batches = _chunk_batches(task.source) if isinstance(task.source, ChunkRun) else _shard_batches(task.source)
    return accumulate_features(chosen, batches, start_index=task.source.start, finish=False,
                               **task.gathering.options())


# ----------------------------------------------------------------------------------------------
# Planning (driver)


def split_runs(sizes: Sequence[int], parts: int) -> list[tuple[int, int]]:
    """[begin, end) ranges of `sizes`' items, contiguous, about `parts` of them of about equal total."""
    total, parts = sum(sizes), max(1, min(parts, len(sizes)))
    runs, begin, done = [], 0, 0
    for i, size in enumerate(sizes):
        done += size
        if done >= total * (len(runs) + 1) / parts and i + 1 > begin:
            runs.append((begin, i + 1))
            begin = i + 1
    if begin < len(sizes):
        runs.append((begin, len(sizes)))
    return runs


def chunk_tasks(directory: str, plans: Sequence, parts: int, **common) -> list[FeatureTask]:
    """Feature tasks over a sample set's chunks (ChunkPlans, in index order), about `parts` of them."""
    plans = [tuple(p) for p in plans]
    return [FeatureTask(ChunkRun(directory, tuple(plans[a:b])), **common)
            for a, b in split_runs([p[2] - p[1] for p in plans], parts)]


def shard_tasks(location: str, split: str, shards: Sequence, limit: Optional[int], parts: int, batch_size: int,
                **common) -> tuple[list[FeatureTask], int]:
    """Feature tasks over the first `limit` images (None: all) of a split's shards (ShardEntry, in
    order), about `parts` of them; and the number of images they cover."""
    runs, first = [], 0
    for entry in shards:
        take = entry.num_samples if limit is None else min(entry.num_samples, limit - first)
        if take <= 0:
            break
        runs.append((entry.name, first, take))
        first += take
    tasks = [FeatureTask(ShardRun(location, split, tuple(runs[a:b]), batch_size), **common)
             for a, b in split_runs([r[2] for r in runs], parts)]
    return tasks, first


def parts_for(num_images: int, workers: int, max_task_images: Optional[int] = None) -> int:
    """How many feature tasks: two per worker (a straggler's share stays small), more when a task
    would exceed `max_task_images`."""
    parts = 2 * max(1, workers)
    if max_task_images:
        parts = max(parts, math.ceil(num_images / max_task_images))
    return parts


# ----------------------------------------------------------------------------------------------
# Merging (driver)


def gather(executor, tasks: Sequence[FeatureTask], on_result: Optional[Callable[[dict], None]] = None
           ) -> tuple[dict, list[dict], list[str]]:
    """Run the tasks on `executor` (a pool, or pipeline.generation.workers.InProcess) and merge
    their parts in index order: ({extractor: StreamFeatures}, per-task info, notes)."""
    if not tasks:
        raise ValueError("no feature tasks: the stream is empty")
    results = executor.run("features", list(tasks), on_result)
    order = sorted(range(len(tasks)), key=lambda i: tasks[i].source.start)
    merged, infos, notes = None, [], []
    for i in order:
        info, handle = results[i]
        parts = executor.fetch(handle)
        if merged is None:
            merged = copy.deepcopy(parts)  # writable (what Ray hands back is read-only)
        elif set(parts) != set(merged):
            raise RuntimeError(f"feature workers disagree on the extractors: {sorted(parts)} on node "
                               f"{info.get('node_id')} vs {sorted(merged)} (e.g. Inception weights on some nodes only)")
        else:
            for name, part in parts.items():
                merged[name].merge(part)
        infos.append(info)
        notes += [n for n in info.get("notes", []) if n not in notes]
    return {name: acc.finish() for name, acc in merged.items()}, infos, notes
