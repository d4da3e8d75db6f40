"""Content-addressed artifact store on pyarrow.fs: a local path or any URI pyarrow understands.

Layout: `<root>/<stage>/<key>/` is a published output; `<root>/<stage>/<key>.partial/` is the
same output while it is being written (kept across interruptions so a stage can resume).
Publishing writes `_MANIFEST.json` (every file with its size and sha256) last inside the partial
directory and then renames it into place. On filesystems without an atomic directory rename
(object stores), files are copied and the manifest is copied last, so an output without a
manifest is never taken as published. A published output is never modified.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import posixpath
import tempfile
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import pyarrow.fs as pafs

from pipeline.store_integrity import (  # noqa: F401 (re-exported)
    NOT_PUBLISHED,
    StatRecord,
    missing_declared,
    sha256_file,
    verify_output,
)
from pipeline.store_locks import file_lock, lease_lock

MANIFEST = "_MANIFEST.json"
PARTIAL_SUFFIX = ".partial"
DAMAGED_DIR = "_damaged"     # <stage>/_damaged/<key>-<time>: outputs that failed verification, kept
LOCKS_DIR = "_locks"         # <stage>/_locks/<key>.lock: who is writing an output
VERIFIED_DIR = "_verified"   # <stage>/_verified/<key>.json: (size, mtime) of files whose sha256 held


class StoreError(RuntimeError):
    pass


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) for a local path or a pyarrow.fs URI (file://, s3://, gs://, hdfs://...)."""
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), os.path.abspath(uri)


PROBE_TIMEOUT = 10.0  # seconds for a filesystem to answer before the run is refused


def _within(seconds: float, fn, *args):
    """fn(*args) in a daemon thread; TimeoutError if it has not answered in time (an unreachable
    object store retries for minutes, and a daemon thread never holds up the exit)."""
    box: dict[str, Any] = {}

    def call():
        try:
            box["value"] = fn(*args)
        except BaseException as error:  # handed to the caller's thread
            box["error"] = error

    thread = threading.Thread(target=call, daemon=True, name="store-probe")
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {seconds:g}s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def probe(uri: str, timeout: float = PROBE_TIMEOUT) -> pafs.FileInfo:
    """What is at a local path or URI, asked with a deadline. Raises StoreError saying why the
    location cannot be used (unknown scheme, unreachable, no such bucket)."""
    try:
        fs, path = _within(timeout, resolve, uri)
    except TimeoutError as error:
        raise StoreError(f"{uri}: filesystem not reachable ({error})") from None
    except (ValueError, OSError) as error:  # pyarrow.ArrowInvalid is a ValueError
        text = str(error)
        if "Unrecognized filesystem type" in text or "unknown filesystem" in text.lower():
            scheme = uri.split("://", 1)[0]
            text = f"unknown filesystem scheme {scheme!r} (pyarrow.fs knows file://, s3://, gs://, hdfs://, ...)"
        raise StoreError(f"{uri}: {text}") from None
    try:
        return _within(timeout, fs.get_file_info, path)
    except TimeoutError as error:
        raise StoreError(f"{uri}: filesystem not reachable ({error})") from None
    except OSError as error:
        raise StoreError(f"{uri}: {error}") from None


def check_root(root: str, timeout: float = PROBE_TIMEOUT) -> Optional[str]:
    """Why `store.root` cannot hold a store (None when it can): checked before anything runs."""
    try:
        info = probe(root, timeout)
    except StoreError as error:
        return str(error)
    if info.type == pafs.FileType.File:
        return f"{root} is a file, not a directory"
    if info.type == pafs.FileType.NotFound and "://" not in root:
        parent = os.path.abspath(root)
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
            return f"{root} cannot be created: {parent} is not a writable directory"
    return None


def _join(*parts: str) -> str:
    return posixpath.join(*parts)


def _is_local(fs: pafs.FileSystem) -> bool:
    return isinstance(fs, pafs.LocalFileSystem) or (
        isinstance(fs, pafs.SubTreeFileSystem) and isinstance(fs.base_fs, pafs.LocalFileSystem))


@dataclass
class Directory:
    """A directory in the store: a filesystem, a path in it, and the URI remote workers re-open."""

    fs: pafs.FileSystem
    path: str
    uri: str

    @classmethod
    def at(cls, uri: str) -> "Directory":
        """The directory a URI or local path names (e.g. one handed to a remote worker)."""
        fs, path = resolve(uri)
        return cls(fs, path, uri)

    @property
    def local_path(self) -> Optional[str]:
        """The directory as an OS path when the store is local, else None."""
        return self.path if isinstance(self.fs, pafs.LocalFileSystem) else None

    def subdir(self, rel: str) -> "Directory":
        return Directory(self.fs, self.child(rel), f"{self.uri.rstrip('/')}/{rel}")

    @contextmanager
    def local_file(self, rel: str) -> Iterator[str]:
        """An OS path holding file `rel`, for APIs that take paths (MLflow artifacts): the file
        itself on a local store, else a temporary copy with the same name, removed afterwards."""
        if self.local_path is not None:
            yield self.child(rel)
            return
        with tempfile.TemporaryDirectory(prefix="store-file-") as tmp:
            path = os.path.join(tmp, posixpath.basename(rel))
            with open(path, "wb") as f:
                f.write(self.read_bytes(rel))
            yield path

    def child(self, rel: str) -> str:
        if rel.startswith("/") or ".." in rel.split("/"):
            raise StoreError(f"{rel!r} is not a relative path inside {self.uri}")
        return _join(self.path, rel)

    def exists(self, rel: str) -> bool:
        return self.fs.get_file_info(self.child(rel)).type != pafs.FileType.NotFound

    def listdir(self, rel: str = "") -> list[str]:
        base = self.child(rel) if rel else self.path
        info = self.fs.get_file_info(pafs.FileSelector(base, allow_not_found=True, recursive=False))
        return sorted(posixpath.basename(i.path) for i in info)

    def files(self) -> list[str]:
        """Every file below the directory, as sorted relative paths."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True, recursive=True))
        prefix = self.path.rstrip("/") + "/"
        return sorted(i.path[len(prefix):] for i in infos if i.type == pafs.FileType.File)

    def open_input(self, rel: str):
        return self.fs.open_input_stream(self.child(rel))

    def read_bytes(self, rel: str) -> bytes:
        with self.open_input(rel) as stream:
            return stream.read()

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_bytes(rel))

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write a whole file atomically: a temporary name, then a rename."""
        target = self.child(rel)
        self.fs.create_dir(posixpath.dirname(target), recursive=True)
        tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
        with self.fs.open_output_stream(tmp) as out:
            out.write(data)
        self.fs.move(tmp, target)

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())

    def open_output(self, rel: str):
        """A stream for a large file; callers that need atomicity write a temp name and `move`."""
        target = self.child(rel)
        self.fs.create_dir(posixpath.dirname(target), recursive=True)
        return self.fs.open_output_stream(target)

    def move(self, src_rel: str, dst_rel: str) -> None:
        self.fs.move(self.child(src_rel), self.child(dst_rel))

    def delete(self, rel: str) -> None:
        info = self.fs.get_file_info(self.child(rel))
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(self.child(rel))
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(self.child(rel))


@dataclass
class Output(Directory):
    """A published stage output with its verified manifest."""

    stage: str = ""
    key: str = ""
    manifest: dict = field(default_factory=dict)

    @property
    def variant(self) -> dict:
        return self.manifest.get("variant", {})

    @property
    def summary(self) -> dict:
        return self.manifest.get("summary", {})


class Store:
    def __init__(self, root: str, fs: Optional[pafs.FileSystem] = None, remember_hashes: bool = True):
        """`root`: a local path or URI; or, with `fs`, a path inside that filesystem.
        `remember_hashes=False` (a dry run) verifies without writing the record of confirmed hashes."""
        self.root_uri = root
        self.fs, self.root = (fs, root) if fs is not None else resolve(root)
        self.remember_hashes = remember_hashes

    def _uri(self, path: str) -> str:
        if "://" in self.root_uri:
            scheme = self.root_uri.split("://", 1)[0]
            return f"{scheme}://{path}" if scheme != "file" else f"file://{path}"
        return path

    def _dir(self, *parts: str) -> Directory:
        path = _join(self.root, *parts)
        return Directory(self.fs, path, self._uri(path))

    # -- locations

    def output_dir(self, stage: str, key: str) -> Directory:
        return self._dir(stage, key)

    def partial_dir(self, stage: str, key: str) -> Directory:
        return self._dir(stage, key + PARTIAL_SUFFIX)

    def exists(self, stage: str, key: str) -> bool:
        return self.fs.get_file_info(_join(self.root, stage, key, MANIFEST)).type == pafs.FileType.File

    def has_partial(self, stage: str, key: str) -> bool:
        return self.fs.get_file_info(self.partial_dir(stage, key).path).type == pafs.FileType.Directory

    def _record(self, stage: str, key: str) -> StatRecord:
        return StatRecord(self.fs, _join(self.root, stage, VERIFIED_DIR, f"{key}.json"), writable=self.remember_hashes)

    # -- reading

    def open(self, stage: str, key: str, deep: bool = False, required: tuple[str, ...] = (),
             level: str = "size") -> Output:
        """The published output, verified against its manifest (see `verify`)."""
        directory = self.output_dir(stage, key)
        problem = self.verify(stage, key, deep=deep, required=required, level=level)
        if problem:
            raise StoreError(f"{directory.uri}: {problem}")
        manifest = directory.read_json(MANIFEST)
        return Output(directory.fs, directory.path, directory.uri, stage=stage, key=key, manifest=manifest)

    def verify(self, stage: str, key: str, deep: bool = False, required: tuple[str, ...] = (),
               level: str = "size") -> Optional[str]:
        """None when the output is whole; else what is wrong with it. `level`: "size" (files and
        sizes), "stat" (and sha256 of every file changed since its hash was last confirmed) or
        "sha256" (every file hashed; also `deep=True`). `required`: the files the stage declares."""
        return verify_output(self.fs, self.output_dir(stage, key).path, MANIFEST, stage, key,
                             level="sha256" if deep else level, declared=tuple(required),
                             record=self._record(stage, key))

    def latest_manifest(self, stage: str, label: str) -> Optional[dict]:
        """The manifest last published for this stage and variant label (for 'why it re-runs')."""
        pointer = self._dir(stage)
        rel = f"_latest/{safe_name(label)}.json"
        if not pointer.exists(rel):
            return None
        try:
            key = pointer.read_json(rel)["key"]
            return self.output_dir(stage, key).read_json(MANIFEST)
        except (OSError, ValueError, KeyError):
            return None

    # -- writing

    def begin(self, stage: str, key: str, fresh: bool = False) -> Directory:
        """The partial directory to write into; kept (for resume) unless `fresh`."""
        partial = self.partial_dir(stage, key)
        if fresh and self.has_partial(stage, key):
            self.fs.delete_dir(partial.path)
        self.fs.create_dir(partial.path, recursive=True)
        return partial

    def lock(self, stage: str, key: str, on_wait=None):
        """Held while this run builds the output (see pipeline.store_locks); `on_wait(holder)` is
        called once if another run holds it."""
        path = _join(self.root, stage, LOCKS_DIR, f"{key}.lock")
        if isinstance(self.fs, pafs.LocalFileSystem):
            return file_lock(path, on_wait)
        return lease_lock(self.fs, path, on_wait)

    def quarantine(self, stage: str, key: str) -> Optional[Directory]:
        """Move a published output that failed verification out of the way, kept for inspection
        under `<stage>/_damaged/`; returns where it went (None when there was nothing)."""
        source = self.output_dir(stage, key)
        if self.fs.get_file_info(source.path).type == pafs.FileType.NotFound:
            return None
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        target = self._dir(stage, DAMAGED_DIR, f"{key}-{stamp}-{uuid.uuid4().hex[:6]}")
        self.fs.create_dir(posixpath.dirname(target.path), recursive=True)
        if _is_local(self.fs):
            self.fs.move(source.path, target.path)
        else:
            self._copy_then_manifest(source, target)
            self.fs.delete_dir(source.path)
        record = self._record(stage, key).path
        if self.fs.get_file_info(record).type == pafs.FileType.File:
            self.fs.delete_file(record)
        return target

    def publish(self, stage: str, key: str, manifest_fields: dict, replace: bool = False,
                required: tuple[str, ...] = ()) -> Output:
        """Checksum the partial directory, write its manifest last, and move it into place.
        `required`: files the stage declares; publishing without them is an error."""
        partial = self.partial_dir(stage, key)
        target = self.output_dir(stage, key)
        files = []
        for rel in partial.files():
            if rel == MANIFEST or ".tmp-" in posixpath.basename(rel):
                continue
            path = partial.child(rel)
            size = self.fs.get_file_info(path).size
            files.append({"path": rel, "size": size, "sha256": sha256_file(self.fs, path)})
        lacking = missing_declared([f["path"] for f in files], required)
        if lacking:
            raise StoreError(f"{partial.uri}: {stage} did not write {', '.join(lacking)}, which it declares as its "
                             "output; not published")
        manifest = {
            **manifest_fields,
            "stage": stage,
            "key": key,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "files": files,
            "total_bytes": sum(f["size"] for f in files),
        }
        for leftover in partial.files():
            if ".tmp-" in posixpath.basename(leftover):
                partial.delete(leftover)
        partial.write_json(MANIFEST, manifest)

        exists = self.fs.get_file_info(target.path).type != pafs.FileType.NotFound
        if exists and not replace and self.exists(stage, key):
            raise StoreError(f"{target.uri} is already published; outputs are never modified")
        retired = None
        if exists:
            retired = self._dir(stage, f".retired-{key}-{uuid.uuid4().hex[:8]}")
            self.fs.move(target.path, retired.path)
        if _is_local(self.fs):
            self.fs.move(partial.path, target.path)
        else:
            self._copy_then_manifest(partial, target)
            self.fs.delete_dir(partial.path)
        if retired is not None:
            self.fs.delete_dir(retired.path)
        self._dir(stage).write_json(f"_latest/{safe_name(manifest.get('label', key))}.json", {"key": key})
        record = self._record(stage, key)  # every file was just hashed: remember them as confirmed
        record.entries = {}
        paths = [target.child(f["path"]) for f in files]
        for entry, info in zip(files, self.fs.get_file_info(paths) if paths else []):
            record.confirm(entry["path"], info)
        record.save()
        return self.open(stage, key, required=required)

    def _copy_then_manifest(self, src: Directory, dst: Directory) -> None:
        for rel in src.files():
            if rel == MANIFEST:
                continue
            self.fs.create_dir(posixpath.dirname(dst.child(rel)), recursive=True)
            self.fs.copy_file(src.child(rel), dst.child(rel))
        self.fs.copy_file(src.child(MANIFEST), dst.child(MANIFEST))


def safe_name(label: object) -> str:
    """`label` as a file name any store takes: letters, digits and -_.= kept, the rest "_"."""
    return "".join(ch if ch.isalnum() or ch in "-_.=" else "_" for ch in str(label)) or "_"
