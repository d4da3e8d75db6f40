"""The content-addressed store: atomic publish, manifests verified on read, pyarrow.fs URIs."""
from __future__ import annotations

import json

import pyarrow.fs as pafs
import pytest

from pipeline.store import MANIFEST, Store, StoreError


def _write_output(store: Store, key: str = "k1", files=None) -> None:
    partial = store.begin("stage", key)
    for rel, data in (files or {"a.bin": b"x" * 100, "sub/b.json": b"{}"}).items():
        partial.write_bytes(rel, data)


def test_publish_moves_the_partial_dir_and_writes_a_manifest(tmp_path):
    store = Store(str(tmp_path / "root"))
    _write_output(store)
    assert not store.exists("stage", "k1")
    out = store.publish("stage", "k1", {"label": "stage"})
    assert store.exists("stage", "k1") and not store.has_partial("stage", "k1")
    manifest = json.loads((tmp_path / "root/stage/k1" / MANIFEST).read_text())
    assert {f["path"] for f in manifest["files"]} == {"a.bin", "sub/b.json"}
    assert manifest["total_bytes"] == 102
    assert out.read_bytes("a.bin") == b"x" * 100


def test_a_published_output_is_never_overwritten(tmp_path):
    store = Store(str(tmp_path))
    _write_output(store)
    store.publish("stage", "k1", {})
    _write_output(store)
    with pytest.raises(StoreError, match="never modified"):
        store.publish("stage", "k1", {})


def test_replace_swaps_in_the_new_output(tmp_path):
    store = Store(str(tmp_path))
    _write_output(store, files={"a.bin": b"old"})
    store.publish("stage", "k1", {})
    _write_output(store, files={"a.bin": b"new!"})
    out = store.publish("stage", "k1", {}, replace=True)
    assert out.read_bytes("a.bin") == b"new!"
    assert [p.name for p in (tmp_path / "stage").iterdir() if p.name.startswith(".retired")] == []


def test_verification_catches_missing_truncated_and_altered_files(tmp_path):
    store = Store(str(tmp_path))
    _write_output(store)
    store.publish("stage", "k1", {})
    assert store.verify("stage", "k1") is None
    target = tmp_path / "stage/k1/a.bin"
    target.write_bytes(b"y" * 100)  # same size, other content
    assert store.verify("stage", "k1") is None
    assert "sha256" in store.verify("stage", "k1", deep=True)
    target.write_bytes(b"y" * 10)
    assert "has 10 bytes, the manifest says 100" in store.verify("stage", "k1")
    target.unlink()
    assert "missing file a.bin" in store.verify("stage", "k1")
    with pytest.raises(StoreError, match="missing file a.bin"):
        store.open("stage", "k1")


def test_an_output_without_manifest_is_not_published(tmp_path):
    store = Store(str(tmp_path))
    (tmp_path / "stage/k1").mkdir(parents=True)
    (tmp_path / "stage/k1/a.bin").write_bytes(b"half")
    assert store.verify("stage", "k1") == "not published (no manifest)"


def test_partial_output_survives_for_resume_and_fresh_clears_it(tmp_path):
    store = Store(str(tmp_path))
    _write_output(store)
    again = store.begin("stage", "k1")
    assert again.exists("a.bin")
    cleared = store.begin("stage", "k1", fresh=True)
    assert not cleared.exists("a.bin")


def test_temporary_files_of_an_interrupted_write_are_not_published(tmp_path):
    store = Store(str(tmp_path))
    partial = store.begin("stage", "k1")
    partial.write_bytes("a.bin", b"whole")
    (tmp_path / "stage/k1.partial/b.bin.tmp-deadbeef").write_bytes(b"half")
    out = store.publish("stage", "k1", {})
    assert out.files() == [MANIFEST, "a.bin"]


def test_paths_outside_the_directory_are_refused(tmp_path):
    partial = Store(str(tmp_path)).begin("stage", "k1")
    for bad in ("../escape", "/etc/passwd", "a/../../b"):
        with pytest.raises(StoreError, match="not a relative path"):
            partial.write_bytes(bad, b"x")


def test_store_on_a_file_uri(tmp_path):
    store = Store(f"file://{tmp_path}/root")
    _write_output(store)
    out = store.publish("stage", "k1", {})
    assert out.uri == f"file://{tmp_path}/root/stage/k1"
    fs, path = pafs.FileSystem.from_uri(out.uri)
    assert fs.get_file_info(f"{path}/a.bin").size == 100


def test_store_on_a_non_local_filesystem_copies_then_writes_the_manifest_last(tmp_path):
    """An object store has no atomic directory rename: files first, the manifest last."""
    fs = pafs._MockFileSystem()
    store = Store("bucket/root", fs=fs)
    _write_output(store)
    copied = []
    real_copy = fs.copy_file

    def record(src, dst):
        copied.append(dst.rsplit("/", 1)[-1])
        real_copy(src, dst)

    store.fs = type("RecordingFS", (), {"__getattr__": lambda self, n: getattr(fs, n), "copy_file": staticmethod(record)})()
    store.publish("stage", "k1", {})
    assert copied[-1] == MANIFEST and set(copied) == {"a.bin", "b.json", MANIFEST}
    store.fs = fs
    assert store.verify("stage", "k1") is None
    assert fs.get_file_info("bucket/root/stage/k1.partial").type == pafs.FileType.NotFound


def test_directory_at_a_uri_its_subdirs_and_local_files(tmp_path):
    import os

    from pipeline.store import Directory

    out = Directory.at(f"file://{tmp_path}/out")
    guide = out.subdir("guide")
    guide.write_bytes("w.bin", b"abc")
    assert guide.uri == f"file://{tmp_path}/out/guide" and (tmp_path / "out" / "guide" / "w.bin").read_bytes() == b"abc"
    with out.local_file("guide/w.bin") as path:  # a local store: the file itself
        assert path == str(tmp_path / "out" / "guide" / "w.bin")

    remote = Directory(pafs._MockFileSystem(), "bucket/out", "mock://bucket/out")
    remote.write_bytes("sub/grid.png", b"png")
    assert remote.local_path is None
    with remote.local_file("sub/grid.png") as path:  # elsewhere: a temporary copy with the same name
        assert os.path.basename(path) == "grid.png" and open(path, "rb").read() == b"png"
    assert not os.path.exists(path)


def test_safe_name_keeps_a_label_readable_and_never_empty(tmp_path):
    from pipeline.store import safe_name

    assert safe_name("guidance=cfg w=1.5/ddim") == "guidance=cfg_w=1.5_ddim"
    assert safe_name("") == "_" and safe_name(0.5) == "0.5"
    store = Store(str(tmp_path / "root"))
    _write_output(store)
    store.publish("stage", "k1", {"label": "p_uncond=0.1 / w=2"})
    assert store.latest_manifest("stage", "p_uncond=0.1 / w=2")["key"] == "k1"
    assert (tmp_path / "root/stage/_latest/p_uncond=0.1___w=2.json").is_file()
