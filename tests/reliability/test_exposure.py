"""No open ports, no paths from data: the private Ray instance listens on loopback only, names
read from manifests are refused unless they are plain file names, and symlinks that lead out of a
dataset root are rejected and reported."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from pipeline.data.loader import ShardedDataset, ShardIntegrityError
from pipeline.data.manifest import ShardEntry, write_shards_table
from pipeline.store import MANIFEST, Store
from tests.reliability.conftest import descendants


def _is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "::1", "::ffff:127.0.0.1", "localhost") or host.startswith("127.")


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
def test_the_private_ray_instance_listens_on_loopback_only(ray_local):
    """The session's instance is started by pipeline.cluster.connect, like the pipeline's: every
    listening socket of its processes (GCS, raylet, object manager, workers, agents) is loopback."""
    ray_local.get([ray_local.remote(lambda: os.getpid()).remote()])  # a worker is up, with its gRPC port
    ours = descendants(os.getpid())
    listening = []
    for line in subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout.splitlines():
        pids = {int(p.split(",")[0]) for p in line.split("pid=")[1:]}
        if pids & ours:
            listening.append((line.split()[3], line.split("users:")[-1]))
    names = " ".join(users for _, users in listening)
    assert "gcs_server" in names and "raylet" in names, listening
    exposed = [(address, users) for address, users in listening if not _is_loopback(address)]
    assert exposed == [], f"listening beyond loopback: {exposed}"


def _shard_dir(tmp_path: Path, name: str) -> str:
    write_shards_table(pafs.LocalFileSystem(), str(tmp_path), [ShardEntry("train", 0, name, 1, (1,), 10, "0" * 64)])
    return str(tmp_path)


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "sub/train-0.tar", ".hidden.tar", "a..tar",
                                  "train-0.tar\nx"])
def test_shard_names_from_the_manifest_must_be_plain_file_names(tmp_path, name):
    with pytest.raises(ShardIntegrityError, match="not a plain shard file name"):
        ShardedDataset(_shard_dir(tmp_path, name))


def test_a_plain_shard_name_is_accepted(tmp_path):
    from pipeline.data.loader import checked_shard_name

    assert checked_shard_name("train-000001.tar", str(tmp_path)) == "train-000001.tar"


@pytest.mark.parametrize("path", ["../escape", "/abs", "a/../../b", "", "./a"])
def test_a_store_manifest_naming_paths_outside_its_output_is_damage(tmp_path, path):
    store = Store(str(tmp_path))
    store.begin("stage", "k1").write_bytes("a.bin", b"x")
    store.publish("stage", "k1", {})
    manifest_path = tmp_path / "stage/k1" / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["files"].append({"path": path, "size": 1, "sha256": "0" * 64})
    manifest_path.write_text(json.dumps(manifest))
    assert store.verify("stage", "k1") == "the manifest's file list is malformed"


def test_symlinks_leaving_the_data_root_are_rejected_and_reported(tmp_path):
    from pipeline.data.generate import TreeSpec, generate_tree
    from pipeline.data.sources import list_source

    spec = TreeSpec(num_classes=3, train_per_class=4, val_per_class=0, image_size=16, layout="imagefolder")
    root = Path(generate_tree(str(tmp_path / "root"), spec))
    outside = Path(generate_tree(str(tmp_path / "elsewhere"), spec))
    train = root / "train" if (root / "train").is_dir() else root
    classes = sorted(p for p in train.iterdir() if p.is_dir())
    other_class = sorted(p for p in (outside / "train" if (outside / "train").is_dir() else outside).iterdir()
                         if p.is_dir())[0]
    secret = next(other_class.iterdir())
    (classes[1] / "inside.jpg").symlink_to(next(classes[0].iterdir()))  # a file staying inside: fine
    (classes[0] / "leak.jpg").symlink_to(secret)                      # a file leading out
    before = len(list_source("imagefolder", str(root)).records)
    (train / classes[2].name).rename(tmp_path / "moved-out")            # a class folder leading out
    (train / classes[2].name).symlink_to(tmp_path / "moved-out", target_is_directory=True)

    listing = list_source("imagefolder", str(root), val_fraction=0.0)
    rejected = [e for e in listing.errors if e.reason == "outside_root"]
    assert sorted(e.origin.split("/")[-1] for e in rejected) == sorted(
        ["leak.jpg"] + [p.name for p in (tmp_path / "moved-out").iterdir()])
    assert all("leads outside the data root" in e.detail for e in rejected)
    kept = {r.origin for r in listing.records}
    assert any(o.endswith("inside.jpg") for o in kept) and not any(o.endswith("leak.jpg") for o in kept)
    assert len(listing.records) == before - 4  # the leak was already out; now the moved class's 4 are too
