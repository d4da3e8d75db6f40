"""Driver-side bookkeeping of a sharding run: plan the shards, write them (in this process, or
in the caller's Ray tasks), then turn the per-shard results into the dataset's manifest, error
report and label set, and enforce the minimum success rate."""
from __future__ import annotations

import posixpath
from collections import Counter, deque

import pyarrow.fs as pafs

from pipeline.data import manifest
from pipeline.data.plan import ShardPlan, plan_shards
from pipeline.data.shardwrite import PARTS_DIR, EncodeOptions, ShardResult, write_shard
from pipeline.data.sources import Listing
from pipeline.store import resolve


class TooManyBadInputs(RuntimeError):
    """The share of inputs that became samples is below data.min_success_rate."""


def finalize(
    fs: pafs.FileSystem,
    out_dir: str,
    listing: Listing,
    plans: list[ShardPlan],
    results: list[ShardResult],
    options: EncodeOptions,
    *,
    min_success_rate: float,
    source: str,
    out_uri: str | None = None,
) -> dict:
    """Write errors.parquet, then (if enough input was good) classes.json, dataset.json and
    shards.parquet last. Returns a flat summary."""
    by_name = {r.name: r for r in results}
    missing = [p.name for p in plans if p.name not in by_name]
    if missing:
        raise RuntimeError(f"{len(missing)} shard(s) have no result, first {missing[0]}")
    results = [by_name[p.name] for p in plans]
    errors = [(e, "") for e in listing.errors] + [(e, r.name) for r in results for e in r.errors]
    manifest.write_errors_table(fs, out_dir, errors)

    good = sum(r.num_samples for r in results)
    bad = len(errors)
    rate = good / (good + bad) if good + bad else 0.0
    reasons = Counter(e.reason for e, _ in errors)
    if rate < min_success_rate or good == 0:
        worst = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common(5)) or "no input at all"
        examples = "; ".join(f"{e.origin}: {e.reason} ({e.detail})" for e, _ in errors[:3])
        where = posixpath.join(out_uri or out_dir, manifest.ERRORS_FILE)
        raise TooManyBadInputs(
            f"only {good} of {good + bad} inputs became samples (success rate {rate:.4f} < data.min_success_rate "
            f"{min_success_rate}); failures by reason: {worst}. Examples: {examples}. Full report: {where}"
        )

    manifest.write_classes(fs, out_dir, listing.classes)
    split_counts = {s: sum(r.num_samples for r in results if r.split == s) for s in ("train", "val")}
    manifest.write_dataset_info(fs, out_dir, {
        "source": source,
        "resolution": options.resolution,
        "num_classes": len(listing.classes),
        "num_images": split_counts,
        "png_compress_level": options.png_compress_level,
        "jpeg_draft": options.jpeg_draft,
    })
    manifest.write_shards_table(fs, out_dir, [
        manifest.ShardEntry(r.split, r.index, r.name, r.num_samples, tuple(r.class_counts), r.size_bytes, r.sha256)
        for r in results
    ])
    parts = posixpath.join(out_dir, PARTS_DIR)
    if fs.get_file_info(parts).type == pafs.FileType.Directory:
        fs.delete_dir(parts)

    summary = {
        "num_train": split_counts["train"],
        "num_val": split_counts["val"],
        "num_classes": len(listing.classes),
        "num_shards_train": sum(1 for r in results if r.split == "train"),
        "num_shards_val": sum(1 for r in results if r.split == "val"),
        "num_errors": bad,
        "success_rate": round(rate, 6),
        "shards_reused": sum(1 for r in results if r.reused),
        "bytes": sum(r.size_bytes for r in results),
    }
    summary.update({f"errors_{reason}": n for reason, n in sorted(reasons.items())})
    return summary


def cleanup_temporaries(fs: pafs.FileSystem, out_dir: str) -> int:
    """Remove `.tmp-*` files a killed run left behind; returns how many."""
    removed = 0
    for directory in (out_dir, posixpath.join(out_dir, PARTS_DIR)):
        if fs.get_file_info(directory).type != pafs.FileType.Directory:
            continue
        for info in fs.get_file_info(pafs.FileSelector(directory)):
            if info.type == pafs.FileType.File and info.base_name.startswith(".tmp-"):
                fs.delete_file(info.path)
                removed += 1
    return removed


def build_serially(
    listing: Listing,
    fs: pafs.FileSystem,
    out_dir: str,
    options: EncodeOptions,
    *,
    samples_per_shard: int,
    seed: int,
    min_success_rate: float = 0.0,
    source: str = "",
    source_fs: pafs.FileSystem | None = None,
) -> dict:
    """Shard a listing in this process (tests, small datasets); the stage runs the same
    per-shard function in Ray tasks."""
    if source_fs is None:
        source_fs = pafs.LocalFileSystem()
    fs.create_dir(out_dir, recursive=True)
    cleanup_temporaries(fs, out_dir)
    plans = plan_shards(listing.records, samples_per_shard, seed)
    results = [write_shard(fs, out_dir, plan, source_fs, options) for plan in plans]
    return finalize(fs, out_dir, listing, plans, results, options, min_success_rate=min_success_rate, source=source)


def _write_shard_task(out_uri: str, plan, source_location, options) -> object:
    """Runs in a Ray worker: re-open both filesystems from their URIs and write one shard."""
    out_fs, out_path = resolve(out_uri)
    source_fs = resolve(source_location)[0] if source_location else None
    return write_shard(out_fs, out_path, plan, source_fs, options)


def shard_in_parallel(ray, out_uri: str, plans: list, source_location, options, num_tasks: int, on_done=None) -> list:
    """Write every planned shard with at most num_tasks Ray tasks in flight. `ray` is the
    caller's Ray module (the shard stage's, the shard bench's): pipeline/data imports no Ray."""
    task = ray.remote(num_cpus=1, max_retries=2)(_write_shard_task)
    pending, results, queue = [], [], deque(plans)
    while queue or pending:
        while queue and len(pending) < num_tasks:
            pending.append(task.remote(out_uri, queue.popleft(), source_location, options))
        done, pending = ray.wait(pending, num_returns=1)
        for ref in done:
            result = ray.get(ref)
            results.append(result)
            if on_done is not None:
                on_done(result)
    return results
