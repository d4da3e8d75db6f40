import hashlib
import os
import shutil

import pyarrow.fs as pafs
import pytest

from pipeline.data import manifest
from pipeline.data.build import TooManyBadInputs, build_serially
from pipeline.data.plan import plan_shards
from pipeline.data.shardwrite import PARTS_DIR, EncodeOptions, write_shard
from pipeline.data.sources import list_source

import images

LOCAL = pafs.LocalFileSystem()
BAD = {
    "truncated.JPEG": (images.truncated_jpeg, "truncated"),
    "random.JPEG": (images.random_bytes, "undecodable"),
    "empty.JPEG": (lambda: b"", "empty"),
    "bomb.JPEG": (images.bomb_png, "bomb"),
}
GOOD_ODDITIES = {
    "png_inside.JPEG": lambda: images.encode(images.Image.fromarray(images.gradient()), "PNG"),
    "cmyk.JPEG": images.cmyk_jpeg,
    "gray.JPEG": images.gray_jpeg,
    "gray16.png": images.gray16_png,
    "palette.png": images.palette_png_with_transparency,
}


@pytest.fixture
def messy_tree(tmp_path, imagefolder_tree):
    root = tmp_path / "messy"
    shutil.copytree(imagefolder_tree, root)
    folder = root / "train" / sorted(os.listdir(root / "train"))[0]
    for name, (make, _) in BAD.items():
        (folder / name).write_bytes(make())
    for name, make in GOOD_ODDITIES.items():
        (folder / name).write_bytes(make())
    return str(root)


def _sha(directory):
    return {n: hashlib.sha256(open(os.path.join(directory, n), "rb").read()).hexdigest()
            for n in sorted(os.listdir(directory)) if n.endswith(".tar")}


def _build(listing, out, **kw):
    options = EncodeOptions(resolution=16, num_classes=len(listing.classes))
    return build_serially(listing, LOCAL, str(out), options, samples_per_shard=kw.pop("samples_per_shard", 10), seed=0, **kw)


def test_every_bad_input_is_counted_and_nothing_valid_is_lost(messy_tree, tmp_path):
    listing = list_source("imagefolder", messy_tree)
    summary = _build(listing, tmp_path / "out")
    assert summary["num_train"] == 48 + len(GOOD_ODDITIES) and summary["num_val"] == 12
    assert summary["num_errors"] == len(BAD)
    errors = manifest.read_errors_table(LOCAL, str(tmp_path / "out"))
    assert sorted((os.path.basename(e["origin"]), e["reason"]) for e in errors) == sorted((n, r) for n, (_, r) in BAD.items())
    assert all(e["shard"].startswith("train-") for e in errors)
    entries = manifest.read_shards_table(LOCAL, str(tmp_path / "out"))
    assert sum(e.num_samples for e in entries) == 48 + len(GOOD_ODDITIES) + 12
    assert all(sum(e.class_counts) == e.num_samples for e in entries)
    assert not os.path.exists(tmp_path / "out" / PARTS_DIR)


def test_min_success_rate_fails_with_counts_reasons_and_report(messy_tree, tmp_path):
    listing = list_source("imagefolder", messy_tree)
    with pytest.raises(TooManyBadInputs) as info:
        _build(listing, tmp_path / "out", min_success_rate=0.99)
    message = str(info.value)
    assert "65 of 69 inputs" in message and "1 truncated" in message and "1 bomb" in message
    assert os.path.join(str(tmp_path / "out"), "errors.parquet") in message
    assert os.path.exists(tmp_path / "out" / "errors.parquet")
    assert not os.path.exists(tmp_path / "out" / "shards.parquet")


def test_rerun_gives_byte_identical_shards(kaggle_tree, tmp_path):
    listing = list_source("imagenet_kaggle", kaggle_tree)
    _build(listing, tmp_path / "a")
    _build(list_source("imagenet_kaggle", kaggle_tree), tmp_path / "b")
    assert _sha(tmp_path / "a") == _sha(tmp_path / "b") and len(_sha(tmp_path / "a")) == 7
    assert (tmp_path / "a" / "shards.parquet").read_bytes() == (tmp_path / "b" / "shards.parquet").read_bytes()


def test_shards_do_not_depend_on_where_the_dataset_lives(kaggle_tree, tmp_path):
    moved = tmp_path / "elsewhere" / "imagenet"
    shutil.copytree(kaggle_tree, moved)
    _build(list_source("imagenet_kaggle", kaggle_tree), tmp_path / "a")
    _build(list_source("imagenet_kaggle", str(moved)), tmp_path / "b")
    assert _sha(tmp_path / "a") == _sha(tmp_path / "b")
    for parquet in ("shards.parquet", "errors.parquet"):
        assert (tmp_path / "a" / parquet).read_bytes() == (tmp_path / "b" / parquet).read_bytes()


def test_shards_mix_classes_and_plan_is_independent_of_order(kaggle_tree):
    listing = list_source("imagenet_kaggle", kaggle_tree)
    plans = plan_shards(listing.records, 10, seed=0)
    again = plan_shards(list(reversed(listing.records)), 10, seed=0)
    assert [[r.key for r in p.records] for p in plans] == [[r.key for r in p.records] for p in again]
    assert len({r.label for r in plans[0].records}) > 2


def test_resume_keeps_finished_shards_and_rewrites_only_missing(kaggle_tree, tmp_path):
    listing = list_source("imagenet_kaggle", kaggle_tree)
    out = str(tmp_path / "out")
    LOCAL.create_dir(out)
    options = EncodeOptions(resolution=16, num_classes=len(listing.classes))
    plans = plan_shards(listing.records, 10, seed=0)
    for plan in plans[:-1]:  # an interrupted run: the last shard never started
        write_shard(LOCAL, out, plan, LOCAL, options)
    os.remove(os.path.join(out, plans[1].name))  # and one finished shard lost
    with open(os.path.join(out, ".tmp-train-000009.tar-dead"), "wb") as f:
        f.write(b"half a shard")
    before = {n: os.stat(os.path.join(out, n)).st_mtime_ns for n in os.listdir(out) if n.endswith(".tar")}
    summary = build_serially(listing, LOCAL, out, options, samples_per_shard=10, seed=0)
    after = {n: os.stat(os.path.join(out, n)).st_mtime_ns for n in os.listdir(out) if n.endswith(".tar")}
    assert summary["shards_reused"] == len(plans) - 2
    rewritten = {n for n in after if before.get(n) != after[n]}
    assert rewritten == {plans[1].name, plans[-1].name}
    assert not any(n.startswith(".tmp-") for n in os.listdir(out))
    fresh = str(tmp_path / "fresh")
    _build(listing, fresh)
    assert _sha(out) == _sha(fresh)


def test_resume_rewrites_a_shard_that_does_not_match_its_record(kaggle_tree, tmp_path):
    listing = list_source("imagenet_kaggle", kaggle_tree)
    out = str(tmp_path / "out")
    LOCAL.create_dir(out)
    options = EncodeOptions(resolution=16, num_classes=len(listing.classes))
    plan = plan_shards(listing.records, 10, seed=0)[0]
    first = write_shard(LOCAL, out, plan, LOCAL, options)
    with open(os.path.join(out, plan.name), "r+b") as f:
        f.seek(700)
        f.write(b"X")
    again = write_shard(LOCAL, out, plan, LOCAL, options)
    assert not again.reused and again.sha256 == first.sha256


@pytest.mark.parametrize("num_tasks", [1, 3])
def test_same_shards_with_any_number_of_ray_tasks(ray_local, kaggle_tree, tmp_path, num_tasks):
    from pipeline.data.build import shard_in_parallel

    listing = list_source("imagenet_kaggle", kaggle_tree)
    options = EncodeOptions(resolution=16, num_classes=len(listing.classes))
    plans = plan_shards(listing.records, 10, seed=0)
    out = str(tmp_path / f"ray{num_tasks}")
    LOCAL.create_dir(out)
    results = shard_in_parallel(ray_local, out, plans, kaggle_tree, options, num_tasks)
    assert sorted(r.name for r in results) == sorted(p.name for p in plans)
    reference = str(tmp_path / "serial")
    _build(listing, reference)
    assert _sha(out) == _sha(reference)


def test_tar_headers_match_the_standard_library():
    import tarfile

    from pipeline.data.tarwrite import FIXED_MODE, ustar_header

    info = tarfile.TarInfo("n01440764_10026.png")
    info.size, info.mtime, info.mode, info.uname, info.gname = 123456, 0, FIXED_MODE, "", ""
    assert ustar_header("n01440764_10026.png", 123456) == info.tobuf(tarfile.USTAR_FORMAT, "ascii", "strict")
