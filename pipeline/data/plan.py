"""Which samples go in which shard: a pure function of the records, the seed and the
shard size, so shard j holds the same samples whatever the number of parallel tasks."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from itertools import groupby

import numpy as np

from pipeline.data.records import ParquetCell, Record

SPLITS = ("train", "val")


@dataclass(frozen=True)
class ShardPlan:
    split: str
    index: int
    records: tuple[Record, ...]

    @property
    def name(self) -> str:
        return shard_name(self.split, self.index)


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


def _locality_unit(record: Record):
    """Records that are cheap to read together stay together when shuffled: a parquet
    row group is read whole, so its rows move as one unit. Other records move alone."""
    loc = record.locator
    if isinstance(loc, ParquetCell):
        return (loc.path, loc.row_group)
    return record.key


def _split_seed(seed: int, split: str) -> list[int]:
    return [seed, int.from_bytes(hashlib.sha256(split.encode()).digest()[:4], "little")]


def plan_shards(records: list[Record], samples_per_shard: int, seed: int) -> list[ShardPlan]:
    """Shuffle each split (seeded, so shards mix classes) and cut it into shards."""
    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
    plans = []
    for split in SPLITS:
        ordered = sorted((r for r in records if r.split == split), key=lambda r: r.key)
        if not ordered:
            continue
        ordered.sort(key=lambda r: (str(_locality_unit(r)), r.key))
        units = [list(group) for _, group in groupby(ordered, key=lambda r: str(_locality_unit(r)))]
        order = np.random.default_rng(_split_seed(seed, split)).permutation(len(units))
        shuffled = [r for u in order for r in units[u]]
        for index, start in enumerate(range(0, len(shuffled), samples_per_shard)):
            plans.append(ShardPlan(split, index, tuple(shuffled[start : start + samples_per_shard])))
    return plans
