"""Parquet files with columns image{bytes,path} and label (the Hugging Face imagenet-1k layout).

Files are found recursively under the path; the split is the file name's prefix
(train-*, validation-*/val-*; test files carry no labels and are skipped). Class names
come from the Hugging Face ClassLabel metadata in the schema when present.
"""
from __future__ import annotations

import json
import posixpath

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.data.labels import ClassSet
from pipeline.data.records import InputError, ParquetCell, Record, safe_key, unique_keys
from pipeline.data.sources.files import stem
from pipeline.data.sources.listing import Listing

_SPLIT_PREFIXES = (("train", "train"), ("validation", "val"), ("val", "val"))


def _split_of(name: str) -> str | None:
    base = posixpath.basename(name).lower()
    for prefix, split in _SPLIT_PREFIXES:
        if base.startswith(prefix):
            return split
    return None


def _class_names(schema) -> list[str] | None:
    metadata = schema.metadata or {}
    if b"huggingface" not in metadata:
        return None
    try:
        features = json.loads(metadata[b"huggingface"])["info"]["features"]
        return list(features["label"]["names"])
    except (KeyError, TypeError, ValueError):
        return None


def list_parquet(fs: pafs.FileSystem, root: str) -> Listing:
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.File:
        paths = [root]
    else:
        selector = pafs.FileSelector(root, recursive=True)
        paths = sorted(i.path for i in fs.get_file_info(selector) if i.type == pafs.FileType.File and i.path.endswith(".parquet"))
    paths = [p for p in paths if _split_of(p) is not None]
    if not paths:
        raise ValueError(f"parquet: no train-*/validation-* .parquet files under {root}")
    rows: list[tuple[str, str, int, int, int, str | None]] = []  # split, path, row group, row, label, image path
    names: list[str] | None = None
    for path in paths:
        with fs.open_input_file(path) as f:
            pf = pq.ParquetFile(f)
            columns = set(pf.schema_arrow.names)
            if not {"image", "label"} <= columns:
                raise ValueError(f"{path}: expected columns image{{bytes,path}} and label, found {sorted(columns)}")
            names = names or _class_names(pf.schema_arrow)
            for group in range(pf.num_row_groups):
                table = pf.read_row_group(group, columns=["label", "image.path"])
                labels = table.column("label").to_pylist()
                image_paths = table.column("image").combine_chunks().field("path").to_pylist()
                for row, (label, image_path) in enumerate(zip(labels, image_paths)):
                    rows.append((_split_of(path), path, group, row, label, image_path))
    labels = [r[4] for r in rows if r[4] is not None and r[4] >= 0]
    num_classes = len(names) if names else (max(labels) + 1 if labels else 0)
    if num_classes == 0:
        raise ValueError(f"parquet: no labelled rows under {root}")
    wnids = tuple(f"{i}" for i in range(num_classes))
    classes = ClassSet(wnids, tuple(names) if names else wnids)
    records, errors = [], []
    file_index_of = {p: i for i, p in enumerate(paths)}
    for split, path, group, row, label, image_path in rows:
        file_index = file_index_of[path]
        origin = f"{path}#rowgroup={group},row={row}" + (f" ({image_path})" if image_path else "")
        if label is None or not 0 <= label < num_classes:
            errors.append(InputError(split, origin, "no_label" if label is None or label < 0 else "unknown_synset", f"label {label!r}"))
            continue
        key = safe_key(stem(image_path)) if image_path else f"{split}_{file_index:05d}_{group:05d}_{row:06d}"
        records.append(Record(key, label, wnids[label], split, ParquetCell(path, group, row), origin))
    return Listing(classes, unique_keys(records), errors)
