"""Shard stage throughput against a naive single-process WebDataset ShardWriter loop.

Both shard the same generated ImageNet-shaped tree (Kaggle layout, JPEGs with a short side
of 256 px) to 64 px, in the same run, listing included. The stage path is the shard
stage's own: list, plan, Ray tasks writing whole shards (2 CPUs), manifest. The naive loop
opens each JPEG, decodes it fully with PIL, applies exact ADM preprocessing, encodes a PNG with
PIL at the stage's zlib level (``EncodeOptions.png_compress_level``, data.png_compress_level)
and writes it with webdataset.ShardWriter: ``ratio`` = stage / that loop. Ray start-up
(init + worker warm-up) is timed separately.

Ablations, each its own figure (never in ``ratio``): the same loop at zlib level 6 (PIL's and
webdataset's default PNG level: ``ratio_vs_naive_level6`` shows what the level alone buys),
and the stage without JPEG draft decoding (``ratio_without_jpeg_draft``).
"""
from __future__ import annotations

import dataclasses
import io
import os
import shutil
import tempfile
import time

# Function-local imports: they bring in Ray and webdataset, which importing this module does not need.

CACHE_DIR = os.path.join(tempfile.gettempdir(), "pipeline-bench-shard")
FULL = dict(num_classes=50, train_per_class=100, val_per_class=0, image_size=256, resolution=64, samples_per_shard=250)
QUICK = dict(num_classes=4, train_per_class=12, val_per_class=0, image_size=96, resolution=32, samples_per_shard=16)
NUM_CPUS = 2
DEFAULT_PNG_LEVEL = 6  # PIL's (and so webdataset's) zlib level for PNG


def _tree(params: dict) -> str:
    from pipeline.config import hash_value
    from pipeline.data.generate import TreeSpec, generate_tree

    spec = TreeSpec(num_classes=params["num_classes"], train_per_class=params["train_per_class"],
                    val_per_class=params["val_per_class"], image_size=params["image_size"], layout="kaggle", seed=0)
    root = os.path.join(CACHE_DIR, "tree-" + hash_value(dataclasses.asdict(spec))[:12])
    return generate_tree(root, spec)


def _start_ray() -> float:
    import ray

    from pipeline import cluster
    from pipeline.config import ClusterConfig

    t0 = time.perf_counter()
    if not ray.is_initialized():
        cluster.connect(ClusterConfig(num_cpus=NUM_CPUS))

    @ray.remote(num_cpus=1)
    def warm_up():
        import pipeline.data.shardwrite  # noqa: F401  (the import the shard tasks pay once)
        return os.getpid()

    ray.get([warm_up.remote() for _ in range(NUM_CPUS)])
    return time.perf_counter() - t0


def _stage(tree: str, out_dir: str, params: dict, jpeg_draft: bool = True) -> int:
    import ray
    import pyarrow.fs as pafs

    from pipeline.data.build import finalize, shard_in_parallel
    from pipeline.data.plan import plan_shards
    from pipeline.data.shardwrite import EncodeOptions
    from pipeline.data.sources import list_source

    listing = list_source("imagenet_kaggle", tree)
    plans = plan_shards(listing.records, params["samples_per_shard"], seed=0)
    options = EncodeOptions(resolution=params["resolution"], num_classes=len(listing.classes), jpeg_draft=jpeg_draft)
    fs = pafs.LocalFileSystem()
    fs.create_dir(out_dir)
    results = shard_in_parallel(ray, out_dir, plans, tree, options, num_tasks=NUM_CPUS)
    summary = finalize(fs, out_dir, listing, plans, results, options, min_success_rate=1.0, source="imagenet_kaggle")
    return summary["num_train"] + summary["num_val"]


def _png(array, level: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=level)
    return buffer.getvalue()


def _naive(tree: str, out_dir: str, params: dict, png_level: int) -> int:
    import numpy as np
    import webdataset as wds
    from PIL import Image

    from pipeline.data.preprocess import adm_center_crop

    mapping = os.path.join(tree, "LOC_synset_mapping.txt")
    with open(mapping) as f:
        index = {line.split()[0]: i for i, line in enumerate(f) if line.strip()}
    train_root = os.path.join(tree, "ILSVRC", "Data", "CLS-LOC", "train")
    count = 0
    os.makedirs(out_dir)
    with wds.ShardWriter(os.path.join(out_dir, "train-%06d.tar"), maxcount=params["samples_per_shard"], verbose=0) as sink:
        for wnid in sorted(os.listdir(train_root)):
            for name in sorted(os.listdir(os.path.join(train_root, wnid))):
                with Image.open(os.path.join(train_root, wnid, name)) as image:
                    array = adm_center_crop(image.convert("RGB"), params["resolution"])
                png = _png(np.asarray(array), png_level)
                sink.write({"__key__": name.split(".")[0], "png": png, "cls": index[wnid]})
                count += 1
    return count


def run(quick: bool = False) -> dict:
    from pipeline.data.shardwrite import EncodeOptions

    params = QUICK if quick else FULL
    stage_level = EncodeOptions(resolution=params["resolution"], num_classes=params["num_classes"]).png_compress_level
    t0 = time.perf_counter()
    tree = _tree(params)
    tree_seconds = time.perf_counter() - t0
    startup = _start_ray()
    work = tempfile.mkdtemp(prefix="bench-shard-")
    try:
        t0 = time.perf_counter()
        n_stage = _stage(tree, os.path.join(work, "stage"), params)
        stage_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        n_naive = _naive(tree, os.path.join(work, "naive"), params, stage_level)
        naive_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        n_level6 = _naive(tree, os.path.join(work, "naive-level6"), params, DEFAULT_PNG_LEVEL)
        level6_seconds = time.perf_counter() - t0
        # Ablation: the stage with bit-exact ADM decoding (data.jpeg_draft: false), so the
        # figures separate what parallel writing buys from what JPEG draft decoding buys.
        t0 = time.perf_counter()
        n_exact = _stage(tree, os.path.join(work, "stage-exact"), params, jpeg_draft=False)
        exact_seconds = time.perf_counter() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    stage_rate = n_stage / stage_seconds
    naive_rate = n_naive / naive_seconds
    return {
        "bench": "shard",
        "n_images": n_stage,
        "n_images_naive": n_naive,
        "source_px": params["image_size"],
        "resolution": params["resolution"],
        "num_cpus": NUM_CPUS,
        "images_per_s_stage": round(stage_rate, 2),
        "images_per_s_naive": round(naive_rate, 2),
        "ratio": round(stage_rate / naive_rate, 3),
        "png_compress_level": stage_level,
        "images_per_s_naive_level6": round(n_level6 / level6_seconds, 2),
        "ratio_vs_naive_level6": round(stage_rate / (n_level6 / level6_seconds), 3),
        "images_per_s_stage_without_jpeg_draft": round(n_exact / exact_seconds, 2),
        "ratio_without_jpeg_draft": round(n_exact / exact_seconds / naive_rate, 3),
        "stage_s": round(stage_seconds, 3),
        "naive_s": round(naive_seconds, 3),
        "startup_s": round(startup, 3),
        "tree_generation_s": round(tree_seconds, 3),
    }
