"""Label sets and the label files of the ImageNet layouts.

Malformed label files are configuration errors, not bad images: they raise ValueError
naming the file, the line and the value.
"""
from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass

import pyarrow.fs as pafs

# Function-local imports: they bring in SciPy, which importing this module does not need.

_WNID = re.compile(r"^n\d{8}$")


@dataclass(frozen=True)
class ClassSet:
    """The label set: index i is class wnids[i], described by names[i]."""

    wnids: tuple[str, ...]
    names: tuple[str, ...]

    def __post_init__(self):
        if len(self.wnids) != len(self.names):
            raise ValueError("ClassSet: wnids and names differ in length")
        if len(set(self.wnids)) != len(self.wnids):
            raise ValueError("ClassSet: duplicated class id")

    @property
    def index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.wnids)}

    def __len__(self) -> int:
        return len(self.wnids)

    def to_json(self) -> str:
        entries = [{"index": i, "wnid": w, "name": n} for i, (w, n) in enumerate(zip(self.wnids, self.names))]
        return json.dumps({"num_classes": len(self), "classes": entries}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "ClassSet":
        entries = sorted(json.loads(text)["classes"], key=lambda e: e["index"])
        return cls(tuple(e["wnid"] for e in entries), tuple(e["name"] for e in entries))


def read_text(fs: pafs.FileSystem, path: str) -> str:
    with fs.open_input_stream(path) as f:
        return f.read().decode("utf-8-sig")


def parse_synset_mapping(text: str, source: str) -> ClassSet:
    """LOC_synset_mapping.txt: `<wnid> <description>` per line; line order is class order."""
    wnids, names, first_line = [], [], {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        wnid, _, name = line.strip().partition(" ")
        if not _WNID.match(wnid):
            raise ValueError(f"{source}:{number}: expected '<wnid> <description>', got {line.strip()!r} (missing synset)")
        if wnid in first_line:
            raise ValueError(f"{source}:{number}: synset {wnid} duplicated (first on line {first_line[wnid]})")
        first_line[wnid] = number
        wnids.append(wnid)
        names.append(name.strip() or wnid)
    if not wnids:
        raise ValueError(f"{source}: no synsets")
    return ClassSet(tuple(wnids), tuple(names))


def parse_val_solution(text: str, source: str) -> dict[str, str]:
    """LOC_val_solution.csv: ImageId,PredictionString; the first token is the image's WNID.

    Returns image id -> wnid. Unknown WNIDs are kept here (the reader counts them as bad
    images); a malformed row or a duplicated image id is a ValueError.
    """
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
        raise ValueError(f"{source}:1: expected header 'ImageId,PredictionString', got {header!r}")
    labels: dict[str, str] = {}
    for number, row in enumerate(reader, start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].split():
            raise ValueError(f"{source}:{number}: expected 'ImageId,<wnid> ...', got {','.join(row)!r} (missing synset)")
        image_id, wnid = row[0].strip(), row[1].split()[0]
        if not _WNID.match(wnid):
            raise ValueError(f"{source}:{number}: {wnid!r} is not a synset id")
        if image_id in labels:
            raise ValueError(f"{source}:{number}: image {image_id} listed twice")
        labels[image_id] = wnid
    return labels


def read_devkit_meta(fs: pafs.FileSystem, path: str) -> tuple[ClassSet, dict[int, str]]:
    """The devkit's data/meta.mat: the 1000 leaf synsets (ILSVRC2012_ID 1..1000).

    Returns the ClassSet in sorted-WNID order (the order of the Kaggle mapping,
    torchvision and ADM's sorted folders) and ILSVRC2012_ID -> WNID.
    """
    import scipy.io

    with fs.open_input_file(path) as f:
        meta = scipy.io.loadmat(io.BytesIO(f.read()), squeeze_me=True, struct_as_record=False)
    if "synsets" not in meta:
        raise ValueError(f"{path}: no 'synsets' variable")
    by_id: dict[int, str] = {}
    names: dict[str, str] = {}
    for entry in meta["synsets"]:
        ilsvrc_id = int(entry.ILSVRC2012_ID)
        wnid = str(entry.WNID)
        if int(getattr(entry, "num_children", 0)) != 0:
            continue
        if ilsvrc_id in by_id:
            raise ValueError(f"{path}: ILSVRC2012_ID {ilsvrc_id} duplicated ({by_id[ilsvrc_id]} and {wnid})")
        if wnid in names:
            raise ValueError(f"{path}: synset {wnid} duplicated")
        by_id[ilsvrc_id] = wnid
        names[wnid] = str(entry.words)
    if not by_id:
        raise ValueError(f"{path}: no leaf synsets")
    wnids = tuple(sorted(names))
    return ClassSet(wnids, tuple(names[w] for w in wnids)), by_id


def parse_devkit_ground_truth(text: str, source: str, id_to_wnid: dict[int, str]) -> list[str]:
    """ILSVRC2012_validation_ground_truth.txt: line i is the ILSVRC2012_ID of val image i."""
    wnids = []
    for number, line in enumerate(text.splitlines(), start=1):
        value = line.strip()
        if not value.isdigit():
            raise ValueError(f"{source}:{number}: expected an ILSVRC2012_ID, got {value!r} (missing synset)")
        if int(value) not in id_to_wnid:
            raise ValueError(f"{source}:{number}: ILSVRC2012_ID {value} is not a synset of meta.mat")
        wnids.append(id_to_wnid[int(value)])
    return wnids
