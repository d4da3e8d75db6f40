"""The Kaggle ImageNet layout.

    <root>/LOC_synset_mapping.txt           class order (line i = class i)
    <root>/LOC_val_solution.csv             val labels (first WNID of PredictionString)
    <root>/ILSVRC/Data/CLS-LOC/train/<wnid>/*.JPEG
    <root>/ILSVRC/Data/CLS-LOC/val/*.JPEG
"""
from __future__ import annotations

import posixpath

import pyarrow.fs as pafs

from pipeline.data.labels import parse_synset_mapping, parse_val_solution, read_text
from pipeline.data.records import InputError, Record, WholeFile, safe_key, unique_keys
from pipeline.data.sources.files import exists, image_files, stem, subdirs
from pipeline.data.sources.listing import Listing

MAPPING = "LOC_synset_mapping.txt"
VAL_SOLUTION = "LOC_val_solution.csv"
CLS_LOC = "ILSVRC/Data/CLS-LOC"


def list_kaggle(fs: pafs.FileSystem, root: str) -> Listing:
    mapping_path = posixpath.join(root, MAPPING)
    train_root = posixpath.join(root, CLS_LOC, "train")
    for required in (mapping_path, train_root):
        if not exists(fs, required):
            raise ValueError(f"imagenet_kaggle: {required} not found (expected the Kaggle ImageNet layout under {root})")
    classes = parse_synset_mapping(read_text(fs, mapping_path), mapping_path)
    index = classes.index
    records: list[Record] = []
    errors: list[InputError] = []

    folders = subdirs(fs, train_root)
    missing = [w for w in classes.wnids if w not in set(folders)]
    if missing:
        raise ValueError(
            f"{mapping_path}: {len(missing)} synset(s) have no folder in {train_root}, first {missing[0]} "
            f"(line {classes.wnids.index(missing[0]) + 1})"
        )
    for wnid in folders:
        for info in image_files(fs, posixpath.join(train_root, wnid)):
            if wnid not in index:
                errors.append(InputError("train", info.path, "unknown_synset", f"folder {wnid} is not in {MAPPING}"))
                continue
            records.append(Record(safe_key(stem(info.base_name)), index[wnid], wnid, "train", WholeFile(info.path), info.path))

    val_root = posixpath.join(root, CLS_LOC, "val")
    solution_path = posixpath.join(root, VAL_SOLUTION)
    if exists(fs, val_root, pafs.FileType.Directory):
        if not exists(fs, solution_path):
            raise ValueError(f"imagenet_kaggle: {val_root} exists but {solution_path} (its labels) is missing")
        solution = parse_val_solution(read_text(fs, solution_path), solution_path)
        seen = set()
        for info in image_files(fs, val_root):
            image_id = stem(info.base_name)
            seen.add(image_id)
            wnid = solution.get(image_id)
            if wnid is None:
                errors.append(InputError("val", info.path, "no_label", f"{image_id} is not in {VAL_SOLUTION}"))
            elif wnid not in index:
                errors.append(InputError("val", info.path, "unknown_synset", f"{VAL_SOLUTION} labels {image_id} as {wnid}, not in {MAPPING}"))
            else:
                records.append(Record(safe_key(image_id), index[wnid], wnid, "val", WholeFile(info.path), info.path))
        for image_id in sorted(set(solution) - seen):
            errors.append(InputError("val", f"{solution_path}:{image_id}", "missing_file", f"{image_id} is labelled but has no image in {val_root}"))
    return Listing(classes, unique_keys(records), errors)
