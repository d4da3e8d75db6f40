"""The official ILSVRC2012 layout, read in place (nothing is extracted).

    <root>/ILSVRC2012_img_train.tar        a tar of per-synset tars (n01440764.tar, ...)
    <root>/val/ILSVRC2012_val_00000001.JPEG ... (flat folder) or <root>/ILSVRC2012_img_val.tar
    <root>/ILSVRC2012_devkit_t12/data/meta.mat
    <root>/ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt

Classes are the 1000 leaf synsets of meta.mat in sorted WNID order. Every image is a
byte range of the train tar; a truncated or corrupt tar loses only what is really lost,
and each loss is reported.
"""
from __future__ import annotations

import posixpath

import pyarrow.fs as pafs

from pipeline.data.labels import parse_devkit_ground_truth, read_devkit_meta, read_text
from pipeline.data.records import ByteRange, InputError, Record, WholeFile, safe_key, unique_keys
from pipeline.data.sources.files import exists, image_files, is_image_name, stem
from pipeline.data.sources.listing import Listing
from pipeline.data.tarscan import TarProblem, scan_tar

TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"
VAL_DIR = "val"
DEVKIT = "ILSVRC2012_devkit_t12/data"


def _val_image_number(name: str) -> int | None:
    """ILSVRC2012_val_00000042 -> 42 (its line in the ground truth file)."""
    prefix = "ILSVRC2012_val_"
    s = stem(name)
    return int(s[len(prefix):]) if s.startswith(prefix) and s[len(prefix):].isdigit() else None


def list_ilsvrc_tars(fs: pafs.FileSystem, root: str) -> Listing:
    meta_path = posixpath.join(root, DEVKIT, "meta.mat")
    train_tar = posixpath.join(root, TRAIN_TAR)
    for required in (meta_path, train_tar):
        if not exists(fs, required):
            raise ValueError(f"imagenet_tars: {required} not found (expected the official ILSVRC2012 layout under {root})")
    classes, id_to_wnid = read_devkit_meta(fs, meta_path)
    index = classes.index
    records: list[Record] = []
    errors: list[InputError] = []

    size = fs.get_file_info(train_tar).size
    with fs.open_input_file(train_tar) as f:
        for outer in scan_tar(f, 0, size):
            if isinstance(outer, TarProblem):
                errors.append(InputError("train", TRAIN_TAR, outer.reason, outer.detail))
                continue
            synset_tar = f"{TRAIN_TAR}:{outer.name}"
            wnid = stem(outer.name)
            available = min(outer.size, size - outer.offset)
            for inner in scan_tar(f, outer.offset, available, declared_length=outer.size):
                if isinstance(inner, TarProblem):
                    errors.append(InputError("train", synset_tar, inner.reason, inner.detail))
                    continue
                origin = f"{synset_tar}:{inner.name}"
                if not is_image_name(inner.name):
                    continue
                if not inner.complete:
                    errors.append(InputError("train", origin, "truncated", "the archive ends inside this image"))
                elif wnid not in index:
                    errors.append(InputError("train", origin, "unknown_synset", f"{outer.name} is not a synset of meta.mat"))
                else:
                    locator = ByteRange(train_tar, inner.offset, inner.size)
                    records.append(Record(safe_key(stem(inner.name)), index[wnid], wnid, "train", locator, origin))

    truth_path = posixpath.join(root, DEVKIT, "ILSVRC2012_validation_ground_truth.txt")
    val_dir, val_tar = posixpath.join(root, VAL_DIR), posixpath.join(root, VAL_TAR)
    val_images: list[tuple[str, object, str]] = []  # (name, locator, origin)
    if exists(fs, val_dir, pafs.FileType.Directory):
        val_images = [(i.base_name, WholeFile(i.path), i.path) for i in image_files(fs, val_dir)]
    elif exists(fs, val_tar):
        val_size = fs.get_file_info(val_tar).size
        with fs.open_input_file(val_tar) as f:
            for member in scan_tar(f, 0, val_size):
                if isinstance(member, TarProblem):
                    errors.append(InputError("val", VAL_TAR, member.reason, member.detail))
                elif not member.complete:
                    errors.append(InputError("val", f"{VAL_TAR}:{member.name}", "truncated", "the archive ends inside this image"))
                elif is_image_name(member.name):
                    val_images.append((member.name, ByteRange(val_tar, member.offset, member.size), f"{VAL_TAR}:{member.name}"))
    if val_images:
        if not exists(fs, truth_path):
            raise ValueError(f"imagenet_tars: validation images found but {truth_path} (their labels) is missing")
        truth = parse_devkit_ground_truth(read_text(fs, truth_path), truth_path, id_to_wnid)
        for name, locator, origin in val_images:
            number = _val_image_number(name)
            if number is None or not 1 <= number <= len(truth):
                errors.append(InputError("val", origin, "no_label", f"no line for {name} in {posixpath.basename(truth_path)}"))
                continue
            wnid = truth[number - 1]
            records.append(Record(safe_key(stem(name)), index[wnid], wnid, "val", locator, origin))
    return Listing(classes, unique_keys(records), errors)
