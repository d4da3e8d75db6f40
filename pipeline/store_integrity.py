"""Is a published output whole? Its manifest against what the stage declares and what is on disk.

Three levels, each including the one before:
- "size": every file the manifest lists exists with its size;
- "stat" (the default): and every file whose (size, mtime) differs from when its sha256 was last
  confirmed is hashed again. The record of confirmed hashes, `<root>/<stage>/_verified/<key>.json`,
  is written at publish and after each check, like DVC's state of trusted (inode, mtime, size):
  a file rewritten in place (a flipped bit, a re-copy) gets a new mtime and is hashed, an untouched
  one costs a stat. A change that also restores the old mtime is only found by "sha256";
- "sha256": every file is hashed (`--verify`).

The manifest must also list what the stage declares (StageSpec.outputs): a manifest edited down
to `"files": []` is not a published output.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import posixpath
from typing import Iterable, Optional

import pyarrow.fs as pafs

LEVELS = ("size", "stat", "sha256")
NOT_PUBLISHED = "not published (no manifest)"


def sha256_file(fs: pafs.FileSystem, path: str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with fs.open_input_stream(path) as stream:
        while True:
            block = stream.read(chunk)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()


def is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def missing_declared(listed: Iterable[str], declared: Iterable[str]) -> list[str]:
    """The declared paths (or globs that must match at least one file) the listing lacks."""
    listed = set(listed)
    return [d for d in declared
            if not (any(fnmatch.fnmatchcase(p, d) for p in listed) if is_glob(d) else d in listed)]


def safe_relative(rel: object) -> bool:
    """A manifest path that stays inside its output directory."""
    return (isinstance(rel, str) and bool(rel) and not rel.startswith("/") and "\\" not in rel
            and all(part not in ("", ".", "..") for part in rel.split("/")))


class StatRecord:
    """The (size, mtime_ns) of each file of one output at the time its sha256 was confirmed."""

    def __init__(self, fs: pafs.FileSystem, path: str, writable: bool = True):
        self.fs, self.path, self.writable = fs, path, writable
        try:
            with fs.open_input_stream(path) as f:
                self.entries = json.loads(f.read())
        except (OSError, ValueError):
            self.entries = {}
        if not isinstance(self.entries, dict):
            self.entries = {}

    @staticmethod
    def stamp(info: pafs.FileInfo) -> list:
        return [info.size, info.mtime_ns]

    def trusted(self, rel: str, info: pafs.FileInfo) -> bool:
        return info.mtime_ns is not None and self.entries.get(rel) == self.stamp(info)

    def confirm(self, rel: str, info: pafs.FileInfo) -> None:
        if info.mtime_ns is not None:
            self.entries[rel] = self.stamp(info)

    def save(self) -> None:
        """Best effort: a store mounted read-only is verified all the same, just not remembered
        (nor is anything written when the record is not `writable`, as in a dry run)."""
        if not self.writable:
            return
        try:
            self.fs.create_dir(posixpath.dirname(self.path), recursive=True)
            tmp = f"{self.path}.tmp"
            with self.fs.open_output_stream(tmp) as f:
                f.write(json.dumps(self.entries, sort_keys=True).encode())
            self.fs.move(tmp, self.path)
        except OSError:
            pass


def verify_output(fs: pafs.FileSystem, directory: str, manifest_name: str, stage: str, key: str,
                  level: str = "size", declared: tuple[str, ...] = (), record: Optional[StatRecord] = None
                  ) -> Optional[str]:
    """None when the output at `directory` is whole at `level`; else what is wrong with it."""
    if level not in LEVELS:
        raise ValueError(f"verification level {level!r} is not one of {LEVELS}")
    manifest_path = posixpath.join(directory, manifest_name)
    if fs.get_file_info(manifest_path).type != pafs.FileType.File:
        return NOT_PUBLISHED
    try:
        with fs.open_input_stream(manifest_path) as f:
            manifest = json.loads(f.read())
    except (OSError, ValueError) as exc:
        return f"unreadable manifest: {exc}"
    if not isinstance(manifest, dict) or manifest.get("key") != key or manifest.get("stage") != stage:
        found = manifest if not isinstance(manifest, dict) else f"{manifest.get('stage')}/{manifest.get('key')}"
        return f"manifest belongs to {found}"
    files = manifest.get("files")
    if not isinstance(files, list) or not all(isinstance(f, dict) and safe_relative(f.get("path"))
                                              and isinstance(f.get("size"), int) for f in files):
        return "the manifest's file list is malformed"
    listed = {f["path"]: f for f in files}
    lacking = missing_declared(listed, declared)
    if lacking:
        return f"the manifest lacks {', '.join(lacking)}, which {stage} declares as its output"
    infos = dict(zip(listed, fs.get_file_info([posixpath.join(directory, rel) for rel in listed]))) if listed else {}
    for rel, entry in listed.items():
        info = infos[rel]
        if info.type != pafs.FileType.File:
            return f"missing file {rel}"
        if info.size != entry["size"]:
            return f"{rel} has {info.size} bytes, the manifest says {entry['size']}"
    if level == "size":
        return None
    changed = False
    for rel, entry in listed.items():
        if level == "stat" and record is not None and record.trusted(rel, infos[rel]):
            continue
        if sha256_file(fs, posixpath.join(directory, rel)) != entry.get("sha256"):
            return f"{rel} does not match its sha256 in the manifest"
        if record is not None:
            record.confirm(rel, infos[rel])
            changed = True
    if record is not None and changed:
        record.save()
    return None
