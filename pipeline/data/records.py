"""The common record type every source yields, and where its bytes live.

A record never holds an open file: it names where its encoded image is (a locator),
so it can be listed in the driver, sent to a Ray task, and read there.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Union


@dataclass(frozen=True, slots=True)
class WholeFile:
    """One file is one encoded image (ImageFolder, Kaggle layout, official val folder)."""

    path: str


@dataclass(frozen=True, slots=True)
class ByteRange:
    """An image stored as a byte range inside a bigger file (a tar member)."""

    path: str
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class ParquetCell:
    """An image in row `row` of row group `row_group` of a parquet file."""

    path: str
    row_group: int
    row: int


@dataclass(frozen=True, slots=True)
class InlineBytes:
    """An image small enough to travel with its record (scikit-learn's digits)."""

    data: bytes = field(repr=False)


Locator = Union[WholeFile, ByteRange, ParquetCell, InlineBytes]


@dataclass(frozen=True, slots=True)
class Record:
    """One labelled input image.

    key: stable, unique within the dataset, safe as a WebDataset key (no dots, no slashes).
    label: class index into the dataset's ClassSet.
    wnid: class id (an ImageNet WNID, or the class folder name).
    split: "train" or "val".
    origin: where the image came from, for error reports (never used as a path).
    """

    key: str
    label: int
    wnid: str
    split: str
    locator: Locator
    origin: str


@dataclass(frozen=True, slots=True)
class InputError:
    """An input that could not become a sample, and why.

    reason is one short word from a fixed vocabulary (see REASONS) so reports can be
    counted by reason; detail is the human explanation.
    """

    split: str
    origin: str
    reason: str
    detail: str
    key: str = ""


REASONS = (
    "empty",
    "truncated",
    "undecodable",
    "bomb",
    "unknown_synset",
    "no_label",
    "missing_file",
    "unreadable",
    "outside_root",  # a symlink that leads out of the dataset root
)


class BadInput(Exception):
    """Raised while reading or decoding one input; carries a reason from REASONS."""

    def __init__(self, reason: str, detail: str):
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_-]")
_MAX_KEY_LENGTH = 80  # a USTAR member name is at most 100 bytes, and we add an extension


def safe_key(name: str) -> str:
    """Turn a file stem into a WebDataset key: [A-Za-z0-9_-] only, bounded length."""
    key = _UNSAFE_KEY_CHARS.sub("_", name)
    if len(key) > _MAX_KEY_LENGTH:
        import hashlib

        digest = hashlib.sha256(name.encode()).hexdigest()[:12]
        key = key[: _MAX_KEY_LENGTH - 13] + "_" + digest
    return key or "_"


def unique_keys(records: list[Record]) -> list[Record]:
    """Make keys unique deterministically: later duplicates get a -2, -3... suffix."""
    seen: dict[str, int] = {}
    out = []
    for r in records:
        n = seen.get(r.key, 0) + 1
        seen[r.key] = n
        if n > 1:
            new_key = f"{r.key}-{n}"
            while new_key in seen:
                n += 1
                new_key = f"{r.key}-{n}"
            seen[new_key] = 1
            r = Record(new_key, r.label, r.wnid, r.split, r.locator, r.origin)
        out.append(r)
    return out

