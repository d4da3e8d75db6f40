"""The corruption matrix: for each kind of output (weights, shards, small JSON, feature statistics,
parquet, sample chunks, evaluation metrics, the sweep's trials table), a bit flipped in place, a deleted file and a manifest emptied to `"files": []` are found
by the default verification before the output is used; a damaged output is moved aside, kept, and
rebuilt by the same command. Hashing is paid only for files that changed."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.graph import build_instances, load_stages, make_plan
from pipeline.store import MANIFEST, Store
from tests.reliability.conftest import copy_of, run_here
from tests.reliability.drive import CONFIG, arguments, graph

pytestmark = pytest.mark.slow  # the module builds a store on Ray first

KINDS = {  # output kind -> (stage, a file of that kind in its output)
    "weights": ("train_diffusion", "model.pt"),
    "shard": ("shard", "train-000000.tar"),
    "json": ("reference_stats", "reference.json"),
    "stats": ("reference_stats", "stats_evalnet.npz"),
    "parquet": ("shard", "shards.parquet"),
}
GENERATED_KINDS = {  # the same, for outputs of the stages after training (the `generated` store)
    "sample chunk": ("sample", "chunk_000000.npz"),
    "metrics": ("evaluate", "metrics.json"),
    "trials": ("sweep", "trials.parquet"),
}


def flip_a_bit(path: Path) -> None:
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x10]))


def empty_the_manifest(path: Path) -> None:
    manifest = json.loads(path.read_text())
    manifest["files"] = []
    path.write_text(json.dumps(manifest))


def output_dir(root: Path, stage: str) -> Path:
    [found] = [p for p in (root / "runs" / stage).iterdir() if len(p.name) == 20 and p.is_dir()]
    return found


def plan_for(root: Path, level: str = "stat"):
    config = load_config(CONFIG, [a for a in arguments(root)[2:] if a != "--set"])
    stages = load_stages(graph("fast"))
    plan = make_plan(build_instances(stages, config), Store(str(root / "runs")), None, frozenset(), level=level)
    return {i.label: i for i in plan.instances}


@pytest.fixture(scope="module")
def pristine(built, tmp_path_factory):
    return built


@pytest.fixture(scope="module")
def generated(pristine, tmp_path_factory):
    """`pristine` with the sample, evaluate and sweep outputs built on it (~60 s)."""
    root = copy_of(pristine, tmp_path_factory.mktemp("generated"))
    assert run_here(root, "fast", "--stages", "sample,evaluate,sweep") == 0
    return root


def of_stage(plan: dict, stage: str):
    return next(inst for inst in plan.values() if inst.name == stage)


@pytest.mark.parametrize("kind", sorted(KINDS) + sorted(GENERATED_KINDS))
@pytest.mark.parametrize("damage", ["bit_flip", "deleted", "emptied_manifest"])
def test_damage_is_found_before_use(request, tmp_path, kind, damage):
    store = request.getfixturevalue("generated" if kind in GENERATED_KINDS else "pristine")
    root = copy_of(store, tmp_path)
    stage, rel = {**KINDS, **GENERATED_KINDS}[kind]
    assert of_stage(plan_for(root), stage).status == "cached"
    directory = output_dir(root, stage)
    if damage == "bit_flip":
        flip_a_bit(directory / rel)
        expected = f"{rel} does not match its sha256"
    elif damage == "deleted":
        (directory / rel).unlink()
        expected = f"missing file {rel}"
    else:
        empty_the_manifest(directory / MANIFEST)
        expected = "the manifest lacks"
    inst = of_stage(plan_for(root), stage)
    assert inst.status == "run" and inst.damaged, inst.reason
    assert expected in inst.reason and "moved aside and rebuilt" in inst.reason


def test_a_flip_that_kept_the_mtime_is_found_by_sha256(pristine, tmp_path):
    root = copy_of(pristine, tmp_path)
    path = output_dir(root, "train_diffusion") / "model.pt"
    stat = path.stat()
    flip_a_bit(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the damage hides its tracks
    assert plan_for(root)["train_diffusion[p_uncond=0.2]"].status == "cached"  # trusted stat, as documented
    assert plan_for(root, level="sha256")["train_diffusion[p_uncond=0.2]"].status == "run"


def test_untouched_outputs_are_not_hashed_again(pristine, tmp_path, monkeypatch):
    import pipeline.store_integrity as integrity

    root = copy_of(pristine, tmp_path)  # copy2 keeps mtimes: the records made at publish still hold
    hashed = []
    real = integrity.sha256_file
    monkeypatch.setattr(integrity, "sha256_file", lambda fs, path, *a: hashed.append(path) or real(fs, path, *a))
    assert all(i.status == "cached" for i in plan_for(root).values() if i.name in ("shard", "reference_stats"))
    assert hashed == []
    flip_a_bit(output_dir(root, "shard") / "train-000001.tar")
    plan_for(root)
    assert [Path(p).name for p in hashed] == ["train-000001.tar"]


@pytest.mark.parametrize("damage", ["bit_flip", "deleted", "emptied_manifest"])
def test_the_same_command_moves_the_damage_aside_and_rebuilds(pristine, tmp_path, damage, capsys):
    root = copy_of(pristine, tmp_path)
    directory = output_dir(root, "reference_stats")
    original = (directory / "stats_evalnet.npz").read_bytes()
    if damage == "bit_flip":
        flip_a_bit(directory / "stats_evalnet.npz")
    elif damage == "deleted":
        (directory / "stats_evalnet.npz").unlink()
    else:
        empty_the_manifest(directory / MANIFEST)
    damaged_files = sorted(p.name for p in directory.iterdir())
    capsys.readouterr()
    assert run_here(root, "fast", "--stages", "reference_stats") == 0
    out = capsys.readouterr().out
    [kept] = list((root / "runs/reference_stats/_damaged").iterdir())
    assert f"the damaged output was moved aside (kept for inspection): {kept}" in out
    assert sorted(p.name for p in kept.iterdir()) == damaged_files
    assert (directory / "stats_evalnet.npz").read_bytes() == original  # rebuilt, the same bytes
    assert plan_for(root, level="sha256")["reference_stats"].status == "cached"


def test_a_flipped_shard_is_rebuilt_before_training_reads_it(pristine, tmp_path, capsys):
    root = copy_of(pristine, tmp_path)
    tar = output_dir(root, "shard") / "train-000000.tar"
    original = tar.read_bytes()
    flip_a_bit(tar)
    capsys.readouterr()
    assert run_here(root, "fast", "--stages", "shard") == 0
    assert "output failed verification (train-000000.tar does not match its sha256" in capsys.readouterr().out
    assert tar.read_bytes() == original


def test_a_stage_that_does_not_write_what_it_declares_is_not_published(tmp_path):
    from pipeline.store import StoreError

    store = Store(str(tmp_path))
    store.begin("stage", "k1").write_bytes("model.json", b"{}")
    with pytest.raises(StoreError, match="did not write model.pt"):
        store.publish("stage", "k1", {}, required=("model.pt", "model.json"))
    assert not store.exists("stage", "k1") and store.has_partial("stage", "k1")
    shutil.rmtree(tmp_path / "stage")


def test_a_dry_run_verifies_without_writing(pristine, tmp_path):
    root = copy_of(pristine, tmp_path)
    flip_a_bit(output_dir(root, "shard") / "train-000001.tar")  # hashed again, and found damaged
    os.utime(output_dir(root, "reference_stats") / "reference.json")  # hashed again, and found whole
    before = {p: p.stat().st_mtime_ns for p in (root / "runs").rglob("*")}
    config = load_config(CONFIG, [a for a in arguments(root)[2:] if a != "--set"])
    stages = load_stages(graph("fast"))
    plan = make_plan(build_instances(stages, config), Store(str(root / "runs"), remember_hashes=False), None,
                     frozenset(), level="stat")
    by_name = {i.name: i for i in plan.instances}
    assert by_name["shard"].damaged and by_name["reference_stats"].status == "cached"
    assert {p: p.stat().st_mtime_ns for p in (root / "runs").rglob("*")} == before
