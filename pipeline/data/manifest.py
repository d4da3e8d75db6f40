"""The dataset's own records: shards.parquet, errors.parquet, classes.json, dataset.json.

These are the dataset's description for readers; the store writes its own manifest of
the whole output directory separately.
"""
from __future__ import annotations

import json
import posixpath
from collections import Counter
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.data.labels import ClassSet
from pipeline.data.records import InputError
from pipeline.data.tarwrite import write_atomically

SHARDS_FILE = "shards.parquet"
ERRORS_FILE = "errors.parquet"
CLASSES_FILE = "classes.json"
DATASET_FILE = "dataset.json"
FORMAT_VERSION = 1

SHARDS_SCHEMA = pa.schema(
    [
        ("split", pa.string()),
        ("index", pa.int32()),
        ("name", pa.string()),
        ("num_samples", pa.int64()),
        ("class_counts", pa.list_(pa.int64())),
        ("size_bytes", pa.int64()),
        ("sha256", pa.string()),
    ]
)
ERRORS_SCHEMA = pa.schema(
    [
        ("split", pa.string()),
        ("origin", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("key", pa.string()),
        ("shard", pa.string()),
    ]
)


@dataclass(frozen=True)
class ShardEntry:
    split: str
    index: int
    name: str
    num_samples: int
    class_counts: tuple[int, ...]
    size_bytes: int
    sha256: str


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def write_shards_table(fs: pafs.FileSystem, out_dir: str, entries: list[ShardEntry]) -> None:
    entries = sorted(entries, key=lambda e: (e.split, e.index))
    columns = {name: [getattr(e, name) for e in entries] for name in SHARDS_SCHEMA.names}
    columns["class_counts"] = [list(c) for c in columns["class_counts"]]
    write_atomically(fs, posixpath.join(out_dir, SHARDS_FILE), _parquet_bytes(pa.table(columns, schema=SHARDS_SCHEMA)))


def read_shards_table(fs: pafs.FileSystem, out_dir: str) -> list[ShardEntry]:
    with fs.open_input_file(posixpath.join(out_dir, SHARDS_FILE)) as f:
        rows = pq.read_table(f).to_pylist()
    return [ShardEntry(**{**r, "class_counts": tuple(r["class_counts"])}) for r in rows]


def write_errors_table(fs: pafs.FileSystem, out_dir: str, errors: list[tuple[InputError, str]]) -> None:
    """errors: (error, shard name or "" for inputs rejected while listing)."""
    rows = sorted(errors, key=lambda e: (e[0].split, e[1], e[0].origin, e[0].reason))
    columns = {name: [] for name in ERRORS_SCHEMA.names}
    for error, shard in rows:
        for name in ("split", "origin", "reason", "detail", "key"):
            columns[name].append(getattr(error, name))
        columns["shard"].append(shard)
    write_atomically(fs, posixpath.join(out_dir, ERRORS_FILE), _parquet_bytes(pa.table(columns, schema=ERRORS_SCHEMA)))


def read_errors_table(fs: pafs.FileSystem, out_dir: str) -> list[dict]:
    with fs.open_input_file(posixpath.join(out_dir, ERRORS_FILE)) as f:
        return pq.read_table(f).to_pylist()


def write_classes(fs: pafs.FileSystem, out_dir: str, classes: ClassSet) -> None:
    write_atomically(fs, posixpath.join(out_dir, CLASSES_FILE), classes.to_json().encode())


def read_classes(fs: pafs.FileSystem, out_dir: str) -> ClassSet:
    with fs.open_input_stream(posixpath.join(out_dir, CLASSES_FILE)) as f:
        return ClassSet.from_json(f.read().decode())


def write_dataset_info(fs: pafs.FileSystem, out_dir: str, info: dict) -> None:
    write_atomically(fs, posixpath.join(out_dir, DATASET_FILE), json.dumps({"format_version": FORMAT_VERSION, **info}, indent=1, sort_keys=True).encode())


def read_dataset_info(fs: pafs.FileSystem, out_dir: str) -> dict:
    with fs.open_input_stream(posixpath.join(out_dir, DATASET_FILE)) as f:
        return json.loads(f.read().decode())


def error_summary(errors: list[InputError], top: int = 5) -> str:
    """'12 truncated, 3 undecodable, ...' (most frequent reasons first)."""
    counts = Counter(e.reason for e in errors)
    return ", ".join(f"{n} {reason}" for reason, n in counts.most_common(top)) or "none"
