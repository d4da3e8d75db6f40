"""Feature statistics gathered on the pool's workers, a run of chunks or shards per task, merged:
equal to the serial pass (FD to float64 rounding; KID, precision, recall, class accuracy and their
intervals exactly; IS to rounding), the workers' extractors loaded once each, where they ran recorded."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import EvalConfig
from pipeline.generation import SamplerConfig, iter_chunks, load_references, plan_chunks, seed_range
from pipeline.generation.features import Gathering, chunk_tasks, gather, shard_tasks, split_runs
from pipeline.generation.pool import sample_chunks
from pipeline.generation.scoring import SCORING, evalnet_extractor, score_batches, score_gathered
from pipeline.generation.workers import InProcess, WorkerSpec
from pipeline.metrics import accumulate_features, frechet_distance
from tests.generation.conftest import directory

CONFIG = SamplerConfig(guidance="cfg", strength=1.0, sampler="ddim", steps=3, seed=4)
N = 40
EXACT = ("kid_evalnet_mean", "kid_evalnet_std", "precision_evalnet", "recall_evalnet", "class_accuracy")


def _pool(count, **worker):
    from pipeline.generation.pool import Pool
    from pipeline.resources import Placement, Units

    units = Units("feature extractor", count, cpus=1.0, knob="eval.num_workers")
    return Pool.start(units, WorkerSpec(stage="evaluate", **worker), Placement(stage="evaluate", log=print),
                      "eval.cpus_per_worker, eval.use_gpu")


@pytest.fixture(scope="module")
def sample_set(tiny_models, tmp_path_factory):
    out = directory(tmp_path_factory.mktemp("samples"))
    plans = plan_chunks(N, 6)  # 7 chunks, the last one short
    sample_chunks(InProcess(WorkerSpec(stage="sample")), CONFIG, plans, tiny_models["diffusion"], out, batch_size=6)
    return out, plans


def test_split_runs_are_contiguous_and_balanced():
    assert split_runs([6] * 6 + [4], 3) == [(0, 3), (3, 5), (5, 7)]
    assert split_runs([5, 5], 8) == [(0, 1), (1, 2)] and split_runs([3], 1) == [(0, 1)]
    assert split_runs([100, 1, 1], 3) == [(0, 1), (1, 2), (2, 3)]


def test_metrics_gathered_on_the_pool_equal_the_serial_pass(ray_local, sample_set, tiny_models, tiny_references):
    out, plans = sample_set
    eval_cfg = EvalConfig(extractors=["evalnet"], batch_size=16)
    references = load_references(tiny_references)
    serial, serial_protocol = score_batches(((images, labels) for images, labels, _ in iter_chunks(out, plans)),
                                            [evalnet_extractor(tiny_models["evalnet"], 16)], references, eval_cfg,
                                            seed_range(CONFIG.seed, N))
    tasks = chunk_tasks(out.uri, plans, 3, eval_cfg=eval_cfg, evalnet=tiny_models["evalnet"],
                        gathering=SCORING.for_stream(N), names=("evalnet",))
    assert len(tasks) == 3
    with _pool(2) as pool:
        gathered, infos, notes = gather(pool, tasks)
        again, _, _ = gather(pool, tasks)  # the workers keep their extractors
    metrics, protocol = score_gathered(gathered, references, eval_cfg, seed_range(CONFIG.seed, N))
    assert protocol == serial_protocol and set(metrics) == set(serial)
    for name, value in serial.items():
        if name.startswith(EXACT):
            assert metrics[name] == value, name
        else:
            assert metrics[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
    assert score_gathered(again, references, eval_cfg, seed_range(CONFIG.seed, N))[0] == metrics
    assert [i["start"] for i in infos] == [t.source.start for t in tasks] and sum(i["num_images"] for i in infos) == N
    assert all(i["node_id"] and i["device"] == "cpu" for i in infos) and notes == []
    assert sum(i["extractors_loaded"] for i in infos) <= 2  # once per worker


def test_kept_features_and_groups_merge_exactly_with_a_small_keep(ray_local, sample_set, tiny_models):
    """With fewer kept features than images, each worker keeps only what the merged subsample keeps
    (Gathering.max_key), and the merge equals the serial pass's subsample and groups."""
    out, plans = sample_set
    eval_cfg = EvalConfig(extractors=["evalnet"], batch_size=16)
    settings = Gathering(keep=12, seed=0, groups=5)
    serial = accumulate_features([evalnet_extractor(tiny_models["evalnet"], 16)],
                                 ((i, lab) for i, lab, _ in iter_chunks(out, plans)), **settings.options())["evalnet"]
    tasks = chunk_tasks(out.uri, plans, 4, eval_cfg=eval_cfg, evalnet=tiny_models["evalnet"],
                        gathering=settings.for_stream(N))
    merged = gather(InProcess(WorkerSpec(stage="evaluate")), tasks)[0]["evalnet"]
    a, b = serial.stats, merged.stats
    assert np.array_equal(a.feature_indices, b.feature_indices) and np.array_equal(a.features, b.features)
    assert a.features.shape[0] == 12 and np.array_equal(serial.groups.sizes, merged.groups.sizes)
    np.testing.assert_allclose(b.cov, a.cov, rtol=1e-10, atol=1e-13)
    assert merged.class_accuracy.correct == serial.class_accuracy.correct


@pytest.mark.slow
def test_reference_statistics_over_shards_on_the_pool_equal_the_serial_pass(ray_local, digits_shards, tiny_models):
    from pipeline.data.loader import ShardedDataset
    from pipeline.generation.scoring import REFERENCE, reference_batches, reference_stats

    eval_cfg = EvalConfig(extractors=["evalnet"], batch_size=64)
    extractor = evalnet_extractor(tiny_models["evalnet"], 64)
    limit = 700  # ends inside a shard
    serial = reference_stats([extractor], reference_batches(digits_shards, "train", 64, limit))["evalnet"]
    shards = ShardedDataset(digits_shards).shards("train")
    tasks, num = shard_tasks(digits_shards, "train", shards, limit, 3, 64, eval_cfg=eval_cfg,
                             evalnet=tiny_models["evalnet"], gathering=REFERENCE.for_stream(limit))
    assert num == limit and len(tasks) == 3 and tasks[-1].source.shards[-1][2] < shards[0].num_samples
    with _pool(2) as pool:
        gathered, infos, _ = gather(pool, tasks)
    stats = gathered["evalnet"].stats
    assert stats.num_samples == serial.num_samples == limit
    assert np.array_equal(stats.feature_indices, serial.feature_indices)
    np.testing.assert_allclose(stats.features, serial.features, rtol=1e-5, atol=1e-6)  # batches differ at shard ends
    np.testing.assert_allclose(stats.mean, serial.mean, rtol=1e-6, atol=1e-9)
    generated = accumulate_features([extractor], [np.zeros((1, 8, 8, 3), np.uint8) + 60,
                                                  np.zeros((3, 8, 8, 3), np.uint8) + 200])["evalnet"].stats
    assert frechet_distance(generated.mean, generated.cov, stats.mean, stats.cov) == pytest.approx(
        frechet_distance(generated.mean, generated.cov, serial.mean, serial.cov), rel=1e-6)
    assert {i["node_id"] for i in infos} and sum(i["num_images"] for i in infos) == limit
