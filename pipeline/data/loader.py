"""Reading a sharded dataset for training and evaluation.

The shards are read with WebDataset's pipeline (explicit node split by rank/world_size,
split by DataLoader worker, seeded sample shuffle), and every shard is checked against
shards.parquet before any of its samples is used: byte size and sha256 first, then the
sample count and class histogram after parsing. A truncated or altered shard raises
ShardIntegrityError naming it; nothing is dropped silently.

Order. Epoch e visits the split's shards in a permutation seeded by (seed, e); rank r
takes every world_size-th of them, worker w of the rank every num_workers-th of those.
Each worker shuffles its samples with a buffer seeded by (seed, rank, w) and yields whole
batches; the DataLoader takes batches from workers round-robin, so the stream of a rank
is a deterministic function of (seed, rank, world_size, num_workers, batch_size).
start_image=N resumes exactly after the first N images of that stream.
"""
from __future__ import annotations

import hashlib
import io
import posixpath
import random
import re
from dataclasses import dataclass

import numpy as np
import pyarrow.fs as pafs
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.data import manifest
from pipeline.data.labels import ClassSet
from pipeline.data.preprocess import decode_png
from pipeline.store import resolve


class ShardIntegrityError(RuntimeError):
    """A shard differs from what shards.parquet says it holds."""


SHARD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\.tar")


def checked_shard_name(name: object, where: str) -> str:
    """A shard name from shards.parquet, refused unless it is a plain file name in the directory
    (no separators, no '..', no leading dot): it is joined to the directory's path."""
    if not isinstance(name, str) or not SHARD_NAME.fullmatch(name) or ".." in name:
        raise ShardIntegrityError(f"{where}/{manifest.SHARDS_FILE} names a shard {name!r}, which is not a plain "
                                  "shard file name; refusing to use it as a path")
    return name


class ShardedDataset:
    """A finished shard directory: its shards, label set and resolution."""

    def __init__(self, location: str, filesystem: pafs.FileSystem | None = None):
        if filesystem is None:
            filesystem, location = resolve(location)
        self.fs, self.root = filesystem, location
        self.entries = manifest.read_shards_table(filesystem, location)
        for entry in self.entries:
            checked_shard_name(entry.name, location)
        self.classes: ClassSet = manifest.read_classes(filesystem, location)
        self.info = manifest.read_dataset_info(filesystem, location)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def resolution(self) -> int:
        return int(self.info["resolution"])

    def shards(self, split: str) -> list[manifest.ShardEntry]:
        return sorted((e for e in self.entries if e.split == split), key=lambda e: e.index)

    def num_images(self, split: str) -> int:
        return sum(e.num_samples for e in self.shards(split))

    def read_verified(self, entry: manifest.ShardEntry) -> bytes:
        """The shard's bytes, after checking size and sha256 against the manifest."""
        path = posixpath.join(self.root, entry.name)
        try:
            with self.fs.open_input_stream(path) as f:
                data = f.read()
        except FileNotFoundError:
            raise ShardIntegrityError(f"shard {entry.name} is missing from {self.root}") from None
        if len(data) != entry.size_bytes:
            raise ShardIntegrityError(f"shard {entry.name}: {len(data)} bytes, manifest says {entry.size_bytes} (truncated or altered)")
        digest = hashlib.sha256(data).hexdigest()
        if digest != entry.sha256:
            raise ShardIntegrityError(f"shard {entry.name}: sha256 {digest[:12]}..., manifest says {entry.sha256[:12]}... (altered)")
        return data

    def size_problems(self, split: str) -> list[str]:
        """The cheap check, without reading: every shard of `split` exists with the manifest's
        size. One line per shard that does not (missing, or truncated/grown)."""
        entries = self.shards(split)
        infos = self.fs.get_file_info([posixpath.join(self.root, e.name) for e in entries])
        return [f"{e.name} is missing" if not info.is_file else f"{e.name} has {info.size} bytes, the manifest says "
                f"{e.size_bytes}" for e, info in zip(entries, infos) if not info.is_file or info.size != e.size_bytes]

    def verify(self, split: str | None = None) -> int:
        """Check every shard (size, sha256, samples, histogram); returns the number of images."""
        total = 0
        for entry in self.entries:
            if split is None or entry.split == split:
                total += len(read_shard_samples(self, entry))
        return total


def read_shard_samples(dataset: ShardedDataset, entry: manifest.ShardEntry) -> list[dict]:
    """All samples of one verified shard, as dicts with __key__, png (bytes), cls (int)."""
    data = dataset.read_verified(entry)
    files = ({**f, "__url__": entry.name} for f in wds.tariterators.tar_file_iterator(io.BytesIO(data)))
    samples = []
    counts = [0] * dataset.num_classes
    for sample in wds.tariterators.group_by_keys(files):
        if "png" not in sample or "cls" not in sample:
            raise ShardIntegrityError(f"shard {entry.name}: sample {sample.get('__key__')} lacks png or cls")
        label = int(sample["cls"].decode())
        if not 0 <= label < dataset.num_classes:
            raise ShardIntegrityError(f"shard {entry.name}: sample {sample['__key__']} has label {label} outside the label set")
        counts[label] += 1
        samples.append({"__key__": sample["__key__"], "__shard__": entry.name, "png": sample["png"], "cls": label})
    if len(samples) != entry.num_samples or tuple(counts) != tuple(entry.class_counts):
        raise ShardIntegrityError(f"shard {entry.name}: read {len(samples)} samples, manifest says {entry.num_samples} (or class histogram differs)")
    return samples


def _split_by_rank(rank: int, world_size: int):
    def nodesplitter(src):
        for i, item in enumerate(src):
            if i % world_size == rank:
                yield item
    return nodesplitter


@dataclass(frozen=True)
class StreamSpec:
    split: str
    batch_size: int
    rank: int = 0
    world_size: int = 1
    num_workers: int = 0
    seed: int = 0
    shuffle_buffer: int = 2000
    infinite: bool = True
    start_image: int = 0
    dtype: str = "float"  # "float": float32 in [-1, 1]; "uint8": 0..255
    drop_last: bool = False
    with_keys: bool = False  # also yield the samples' keys (for checks and debugging)


class ShardBatches(IterableDataset):
    """Yields (images [B,3,H,W], labels [B]) batches of one rank and DataLoader worker."""

    def __init__(self, dataset: ShardedDataset, spec: StreamSpec):
        super().__init__()
        self.dataset, self.spec = dataset, spec

    def _shard_urls(self):
        spec = self.spec
        entries = self.dataset.shards(spec.split)
        epoch = 0
        while True:
            order = np.random.default_rng([spec.seed, epoch]).permutation(len(entries)) if spec.infinite else range(len(entries))
            for i in order:
                yield {"url": entries[i].name, "entry": entries[i]}
            epoch += 1
            if not spec.infinite:
                return

    def _samples(self, src):
        for item in src:
            yield from read_shard_samples(self.dataset, item["entry"])

    def __iter__(self):
        spec = self.spec
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        stages = [self._shard_urls, _split_by_rank(spec.rank, spec.world_size), wds.split_by_worker, self._samples]
        if spec.infinite and spec.shuffle_buffer > 1:
            rng = random.Random(f"{spec.seed}/{spec.rank}/{worker}")
            stages.append(wds.shuffle(spec.shuffle_buffer, initial=spec.shuffle_buffer, rng=rng))
        stream = iter(wds.DataPipeline(*stages))

        # batches k of the rank's stream come from worker k % workers; skip ours below start
        full, rest = divmod(spec.start_image, spec.batch_size)
        my_skipped_batches = len(range(worker, full, workers))
        skip = my_skipped_batches * spec.batch_size + (rest if full % workers == worker else 0)
        for _ in range(skip):
            next(stream)
        first_size = spec.batch_size - (rest if full % workers == worker else 0)
        size = first_size
        batch = []
        for sample in stream:
            batch.append(sample)
            if len(batch) == size:
                yield self._collate(batch)
                batch, size = [], spec.batch_size
        if batch and not spec.drop_last:
            yield self._collate(batch)

    def _collate(self, samples: list[dict]):
        images = torch.from_numpy(np.stack([decode_png(s["png"]) for s in samples])).permute(0, 3, 1, 2).contiguous()
        labels = torch.tensor([s["cls"] for s in samples], dtype=torch.int64)
        if self.spec.dtype == "float":
            images = images.to(torch.float32).div_(127.5).sub_(1.0)
        if self.spec.with_keys:
            return images, labels, [s["__key__"] for s in samples]
        return images, labels


def make_loader(dataset: ShardedDataset | str, spec: StreamSpec, pin_memory: bool = False) -> DataLoader:
    """A DataLoader over one split: infinite and shuffled for training (resume with
    spec.start_image), or a single ordered pass for evaluation (infinite=False). With
    spec.num_workers > 0 the shards are read and decoded in that many worker processes (the
    stream is still a function of the spec alone, see the module docstring); `pin_memory`
    puts batches in page-locked memory for fast, asynchronous copies to a GPU."""
    if isinstance(dataset, str):
        dataset = ShardedDataset(dataset)
    if spec.dtype not in ("float", "uint8"):
        raise ValueError(f"dtype must be 'float' or 'uint8', got {spec.dtype!r}")
    if spec.batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if not 0 <= spec.rank < spec.world_size:
        raise ValueError(f"rank {spec.rank} outside world_size {spec.world_size}")
    shards = dataset.shards(spec.split)
    readers = spec.world_size * max(1, spec.num_workers)
    if spec.infinite and len(shards) < readers:
        raise ValueError(
            f"split {spec.split!r} has {len(shards)} shards but {spec.world_size} ranks x {max(1, spec.num_workers)} workers "
            f"need at least {readers}: re-shard with a smaller data.samples_per_shard or use fewer workers"
        )
    if not spec.infinite and spec.start_image:
        raise ValueError("start_image is for the infinite training stream; evaluation passes start at 0")
    return DataLoader(
        ShardBatches(dataset, spec),
        batch_size=None,
        num_workers=spec.num_workers,
        persistent_workers=False,
        prefetch_factor=2 if spec.num_workers else None,
        pin_memory=pin_memory,
    )
