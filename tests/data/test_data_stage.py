"""The shard stage through the real runner: digits, and generated trees in the official-tar
and Kaggle layouts; resume of a partial output."""
import json
import os

import pytest

from pipeline.data.loader import ShardedDataset
from pipeline.run import main


def _argv(tmp_path, *sets):
    base = [
        f"store.root={tmp_path / 'runs'}",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"tracking.artifact_location={tmp_path / 'mlruns'}",
        "data.samples_per_shard=64",
    ]
    argv = ["--stages", "shard"]
    for s in base + list(sets):
        argv += ["--set", s]
    return argv


def _output(tmp_path):
    stage_dir = tmp_path / "runs" / "shard"
    [key] = [d for d in os.listdir(stage_dir) if not d.startswith(("_", "."))]
    return stage_dir / key


def test_digits_through_the_runner(ray_local, tmp_path):
    assert main(_argv(tmp_path)) == 0
    out = _output(tmp_path)
    manifest = json.loads((out / "_MANIFEST.json").read_text())
    assert manifest["summary"]["num_train"] + manifest["summary"]["num_val"] == 1797
    ds = ShardedDataset(str(out))
    assert ds.num_classes == 10 and ds.resolution == 8 and ds.verify() == 1797
    assert main(_argv(tmp_path)) == 0  # cached: nothing re-runs
    assert len([d for d in os.listdir(tmp_path / "runs" / "shard") if not d.startswith(("_", "."))]) == 1


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["tars", "kaggle"])
def test_generated_imagenet_layouts_through_the_runner(ray_local, tmp_path, layout):
    sets = ["data.source=generated", f"data.generated.layout={layout}", "data.generated.num_classes=5",
            "data.generated.train_per_class=20", "data.generated.val_per_class=4", "data.generated.image_size=48",
            f"data.path={tmp_path / 'tree'}", "data.num_tasks=2"]
    assert main(_argv(tmp_path, *sets)) == 0
    ds = ShardedDataset(str(_output(tmp_path)))
    assert ds.num_images("train") == 100 and ds.num_images("val") == 20
    assert [c for c in ds.classes.wnids] == [f"n{90000000 + c:08d}" for c in range(5)]
    assert ds.verify() == 120


def test_stage_resumes_a_partial_output(ray_local, tmp_path):
    from pipeline.config import load_config
    from pipeline.data.plan import plan_shards
    from pipeline.data.shardwrite import EncodeOptions, write_shard
    from pipeline.data.sources import list_source
    from pipeline.graph import build_instances, load_stages
    from pipeline.store import Store

    argv = _argv(tmp_path, "data.max_images_per_class=40")
    config = load_config(None, argv[3::2])
    [shard] = [i for i in build_instances(load_stages(), config) if i.name == "shard"]
    store = Store(config.store.root)
    partial = store.begin("shard", shard.key)
    listing = list_source("digits", None, val_fraction=config.data.val_fraction, seed=config.data.seed, max_images_per_class=40)
    plans = plan_shards(listing.records, config.data.samples_per_shard, config.data.seed)
    options = EncodeOptions(resolution=config.data.resolution, num_classes=10, png_compress_level=config.data.png_compress_level,
                            jpeg_draft=config.data.jpeg_draft)
    for plan in plans[:3]:  # what a killed run had finished
        write_shard(partial.fs, partial.path, plan, None, options)
    assert main(argv) == 0
    summary = store.open("shard", shard.key).summary
    assert summary["shards_reused"] == 3 and summary["num_train"] == 400 and summary["num_val"] == 179


def test_too_much_bad_input_fails_the_stage(ray_local, tmp_path, imagefolder_tree):
    import shutil

    root = tmp_path / "bad"
    shutil.copytree(imagefolder_tree, root)
    for path in sorted((root / "train").rglob("*.JPEG"))[:10]:
        path.write_bytes(b"")
    sets = ["data.source=imagefolder", f"data.path={root}", "data.min_success_rate=0.95"]
    assert main(_argv(tmp_path, *sets)) == 1
    partial = [d for d in os.listdir(tmp_path / "runs" / "shard") if d.endswith(".partial")]
    assert partial and os.path.exists(tmp_path / "runs" / "shard" / partial[0] / "errors.parquet")


def test_bench_quick_returns_finite_figures(ray_local):
    import math

    from pipeline.benches.shard import run

    figures = run(quick=True)
    for key in ("images_per_s_stage", "images_per_s_naive", "ratio", "n_images", "startup_s",
                "images_per_s_naive_level6", "ratio_vs_naive_level6"):
        assert math.isfinite(figures[key]) and figures[key] > 0
    # the peer writes PNGs at the stage's level; PIL's default level 6 is a separate figure
    assert figures["png_compress_level"] == 1
