"""What every source returns, and the dispatcher from a source name to its reader."""
from __future__ import annotations

import dataclasses
import os
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pyarrow.fs as pafs

from pipeline.arguments import ArgumentError
from pipeline.data.labels import ClassSet
from pipeline.data.records import InputError, Record
from pipeline.data.sources.files import outside_root
from pipeline.store import resolve

SOURCES = ("digits", "imagefolder", "imagenet_kaggle", "imagenet_tars", "parquet")
FILE_SOURCES = SOURCES[1:]  # read from a dataset path


def check_location(source: str, path: str | None) -> None:
    """A source read from files needs a path; a local one must exist (a URI is checked when listed)."""
    if source not in FILE_SOURCES:
        return
    if not path:
        raise ArgumentError("path", path, f"source '{source}' needs a dataset path")
    if "://" not in path and not os.path.exists(path):
        raise ArgumentError("path", path, "no such file or directory")


@dataclass
class Listing:
    """A dataset's label set, its records (train and val) and the inputs already known bad."""

    classes: ClassSet
    records: list[Record]
    errors: list[InputError] = field(default_factory=list)

    def split(self, name: str) -> list[Record]:
        return [r for r in self.records if r.split == name]


def seeded_val_split(records: list[Record], val_fraction: float, seed: int) -> list[Record]:
    """Move round(n * val_fraction) records of each class to "val", chosen by a seeded
    permutation of the class's records in key order (independent of listing order)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    by_label: dict[int, list[Record]] = defaultdict(list)
    for r in sorted(records, key=lambda r: r.key):
        by_label[r.label].append(r)
    out = []
    for label in sorted(by_label):
        group = by_label[label]
        order = np.random.default_rng([seed, label]).permutation(len(group))
        n_val = int(round(len(group) * val_fraction))
        val = set(order[:n_val].tolist())
        for i, r in enumerate(group):
            split = "val" if i in val else "train"
            out.append(Record(r.key, r.label, r.wnid, split, r.locator, r.origin))
    return out


def relative_origins(listing: Listing, root: str) -> None:
    """Origins relative to the dataset root (which the stage's key records), so the shards'
    bytes and the error report do not depend on where the dataset is mounted."""
    prefix = root.rstrip("/") + "/"

    def relative(origin: str) -> str:
        return origin[len(prefix):] if origin.startswith(prefix) else origin

    listing.records = [dataclasses.replace(r, origin=relative(r.origin)) for r in listing.records]
    listing.errors = [dataclasses.replace(e, origin=relative(e.origin)) for e in listing.errors]


def reject_links_outside(listing: Listing, fs: pafs.FileSystem, root: str) -> None:
    """Records whose file a symlink places outside the dataset root become errors (reason
    outside_root), so a tree cannot pull in files from elsewhere on the machine unnoticed."""
    paths = {r.locator.path for r in listing.records if hasattr(r.locator, "path")}
    escaped = outside_root(fs, root, paths)
    if not escaped:
        return
    kept = []
    for r in listing.records:
        if getattr(r.locator, "path", None) in escaped:
            listing.errors.append(InputError(r.split, r.origin, "outside_root",
                                             f"a symlink leads outside the data root {root}; not read", r.key))
        else:
            kept.append(r)
    listing.records = kept


def cap_per_class(records: list[Record], max_per_class: int | None) -> list[Record]:
    """Keep the first max_per_class records (in key order) of each (split, class)."""
    if max_per_class is None:
        return records
    kept: dict[tuple[str, int], int] = defaultdict(int)
    out = []
    for r in sorted(records, key=lambda r: (r.split, r.label, r.key)):
        if kept[(r.split, r.label)] < max_per_class:
            kept[(r.split, r.label)] += 1
            out.append(r)
    return out


def list_source(
    source: str,
    path: str | None,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    max_images_per_class: int | None = None,
    filesystem: pafs.FileSystem | None = None,
) -> Listing:
    """List a dataset. `path` is a local path or a URI that pyarrow.fs understands."""
    if source == "digits":
        from pipeline.data.sources.digits import list_digits

        listing = list_digits(val_fraction=val_fraction, seed=seed)
    else:
        if source not in SOURCES:
            raise ValueError(f"unknown data source {source!r}; expected one of {SOURCES}")
        if filesystem is None:
            check_location(source, path)
            filesystem, path = resolve(path)
        if source == "imagefolder":
            from pipeline.data.sources.imagefolder import list_imagefolder

            listing = list_imagefolder(filesystem, path, val_fraction=val_fraction, seed=seed)
        elif source == "imagenet_kaggle":
            from pipeline.data.sources.kaggle import list_kaggle

            listing = list_kaggle(filesystem, path)
        elif source == "imagenet_tars":
            from pipeline.data.sources.ilsvrc_tars import list_ilsvrc_tars

            listing = list_ilsvrc_tars(filesystem, path)
        else:
            from pipeline.data.sources.parquet import list_parquet

            listing = list_parquet(filesystem, path)
        reject_links_outside(listing, filesystem, path)
        relative_origins(listing, path)
    listing.records = cap_per_class(listing.records, max_images_per_class)
    listing.records.sort(key=lambda r: (r.split, r.key))
    keys = [r.key for r in listing.records]
    if len(set(keys)) != len(keys):
        raise AssertionError("source produced duplicate keys")  # readers call unique_keys
    return listing


# ----------------------------------------------------------------------------------------------
# Sizes known before listing (the capacity plan of `--dry-run` reads no dataset)

ILSVRC2012_TRAIN, ILSVRC2012_VAL, ILSVRC2012_CLASSES = 1_281_167, 50_000, 1000


@dataclass(frozen=True)
class ExpectedSize:
    train: int
    val: int
    classes: int
    exact: bool  # False: an upper bound (ImageNet under max_images_per_class: some classes have fewer)


def expected_size(data) -> ExpectedSize | None:
    """The images a `data` config section will list, without reading the dataset: digits are
    listed (in memory, quick), generated trees counted from their settings, the ImageNet layouts
    are ILSVRC2012 (1,281,167 train, 50,000 val, 1000 classes); None for imagefolder and parquet."""
    cap = data.max_images_per_class

    def capped(per_class: int) -> int:
        return per_class if cap is None else min(per_class, cap)

    if data.source == "digits":
        listing = list_source("digits", None, val_fraction=data.val_fraction, seed=data.seed,
                              max_images_per_class=cap)
        return ExpectedSize(len(listing.split("train")), len(listing.split("val")), len(listing.classes.wnids), True)
    if data.source == "generated":
        g = data.generated
        return ExpectedSize(g.num_classes * capped(g.train_per_class), g.num_classes * capped(g.val_per_class),
                            g.num_classes, True)
    if data.source in ("imagenet_kaggle", "imagenet_tars"):
        at_most = ILSVRC2012_CLASSES * cap if cap is not None else ILSVRC2012_TRAIN
        return ExpectedSize(min(ILSVRC2012_TRAIN, at_most), min(ILSVRC2012_VAL, at_most), ILSVRC2012_CLASSES,
                            exact=cap is None)
    return None
