"""A plain ImageFolder tree: root/<class>/* (split by val_fraction) or root/{train,val}/<class>/*.

Classes are the sorted folder names of the training tree.
"""
from __future__ import annotations

import posixpath

import pyarrow.fs as pafs

from pipeline.data.labels import ClassSet
from pipeline.data.records import InputError, Record, WholeFile, safe_key, unique_keys
from pipeline.data.sources.files import exists, image_files, stem, subdirs
from pipeline.data.sources.listing import Listing, seeded_val_split


def list_imagefolder(fs: pafs.FileSystem, root: str, *, val_fraction: float, seed: int) -> Listing:
    if not exists(fs, root, pafs.FileType.Directory):
        raise ValueError(f"imagefolder: {root} is not a directory")
    has_splits = exists(fs, posixpath.join(root, "train"), pafs.FileType.Directory)
    train_root = posixpath.join(root, "train") if has_splits else root
    class_names = subdirs(fs, train_root)
    if not class_names:
        raise ValueError(f"imagefolder: {train_root} has no class folders")
    classes = ClassSet(tuple(class_names), tuple(class_names))
    index = classes.index
    records: list[Record] = []
    errors: list[InputError] = []

    def add_split(split_root: str, split: str) -> None:
        for name in subdirs(fs, split_root):
            for info in image_files(fs, posixpath.join(split_root, name)):
                origin = info.path
                if name not in index:
                    errors.append(InputError(split, origin, "unknown_synset", f"class folder {name!r} is not a training class"))
                    continue
                key = safe_key(f"{name}_{stem(info.base_name)}")
                records.append(Record(key, index[name], name, split, WholeFile(info.path), origin))

    add_split(train_root, "train")
    if has_splits:
        if exists(fs, posixpath.join(root, "val"), pafs.FileType.Directory):
            add_split(posixpath.join(root, "val"), "val")
        records = unique_keys(records)
    else:
        records = seeded_val_split(unique_keys(records), val_fraction, seed)
    return Listing(classes, records, errors)
