"""The Ray actor pool: chunks written atomically, identical for 1 and 2 actors and any batch
size, and a re-run generates only the missing chunks."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.generation import SamplerConfig, generate, iter_chunks, load_models, plan_chunks
from pipeline.generation.chunks import remove_temporaries
from pipeline.generation.pool import generate_parallel
from tests.generation.conftest import directory

TRIAL = SamplerConfig(guidance="cfg", strength=1.0, sampler="ddpm", steps=3, seed=5)
NUM_IMAGES = 10


def _read_all(out):
    parts = list(iter_chunks(out, plan_chunks(NUM_IMAGES, 4)))
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))


def test_pool_output_is_independent_of_actors_and_batch_size_and_resumes(ray_local, tiny_models, tmp_path):
    one = directory(tmp_path / "one")
    result = generate_parallel(TRIAL, NUM_IMAGES, tiny_models["diffusion"], one, num_actors=1, chunk_size=4, batch_size=4)
    assert result.num_chunks == 3 and result.generated_images == 10 and result.reused_chunks == 0
    assert one.listdir() == ["chunk_000000.npz", "chunk_000001.npz", "chunk_000002.npz"]
    images, labels, indices = _read_all(one)
    assert images.shape == (10, 8, 8, 3) and indices.tolist() == list(range(10))

    two = directory(tmp_path / "two")
    generate_parallel(TRIAL, NUM_IMAGES, tiny_models["diffusion"], two, num_actors=2, chunk_size=4, batch_size=3)
    for a, b in zip(_read_all(two), (images, labels, indices)):
        assert np.array_equal(a, b)
    direct, direct_labels = generate(TRIAL, load_models(TRIAL, tiny_models["diffusion"]), range(10), 10)
    assert np.array_equal(direct, images) and np.array_equal(direct_labels, labels)

    # an interrupted run: one chunk missing, one temporary file left behind
    two.delete("chunk_000001.npz")
    two.write_bytes("chunk_000002.npz.tmp-deadbeef", b"partial")
    before = {name: (tmp_path / "two" / name).stat().st_mtime_ns for name in ("chunk_000000.npz", "chunk_000002.npz")}
    again = generate_parallel(TRIAL, NUM_IMAGES, tiny_models["diffusion"], two, num_actors=2, chunk_size=4, batch_size=3)
    assert again.reused_chunks == 2 and again.generated_images == 4
    after = {name: (tmp_path / "two" / name).stat().st_mtime_ns for name in before}
    assert after == before  # finished chunks are not rewritten
    for a, b in zip(_read_all(two), (images, labels, indices)):
        assert np.array_equal(a, b)
    assert remove_temporaries(two) == 1 and len(two.listdir()) == 3
    assert generate_parallel(TRIAL, NUM_IMAGES, tiny_models["diffusion"], two, num_actors=2, chunk_size=4).generated_images == 0


# -- one pool for every caller: several configurations, dead and late workers, placement, devices

PAG = SamplerConfig(guidance="pag", strength=2.0, sampler="ddim", steps=3, seed=6)
AUTO = SamplerConfig(guidance="autoguidance", strength=1.0, sampler="ddim", steps=3, seed=7)


def _pool(count, joined=False, gpus=0.0, wait=120.0, said=None, cpus=1.0, **worker):
    from pipeline.generation.pool import Pool
    from pipeline.generation.workers import WorkerSpec
    from pipeline.resources import Placement, Units

    units = Units("sampler actor", count, cpus=cpus, gpus=gpus, knob="sample.num_actors")
    said = said if said is not None else []
    placement = Placement(stage="sample", joined=joined, wait_timeout_s=wait, log=said.append)
    return Pool.start(units, WorkerSpec(stage="sample", **worker), placement, "sample.cpus_per_actor, sample.use_gpu")


def _direct(config, tiny_models, n):
    return generate(config, load_models(config, tiny_models["diffusion"]), range(n), n)[0]


def _images(out, plans):
    return np.concatenate([c[0] for c in iter_chunks(out, plans)])


def test_chunk_files_are_byte_identical_for_any_pool_size_and_precision(ray_local, tiny_models, tmp_path):
    """The chunks (generate's fast path inside the actors: channels-last, bf16 as a bf16 copy) are
    the same bytes made in this process or by a pool of 1, 2 or 4 actors, whichever takes which chunk."""
    from dataclasses import replace

    from pipeline.generation.pool import sample_chunks
    from pipeline.generation.workers import InProcess, WorkerSpec

    plans = plan_chunks(NUM_IMAGES, 2)
    configs = (TRIAL, replace(TRIAL, precision="bf16"))
    expected = {}
    for config in configs:
        here = directory(tmp_path / f"{config.id}-here")
        in_process = InProcess(WorkerSpec(stage="sample"))
        sample_chunks(in_process, config, plans, tiny_models["diffusion"], here, batch_size=2)
        expected[config.id] = {name: here.read_bytes(name) for name in here.listdir()}
        assert len(expected[config.id]) == len(plans)
    for size in (1, 2, 4):  # each pool makes both precisions' chunks (an actor start is most of the time)
        with _pool(size, cpus=0.5) as pool:
            pool.wait_ready(size)
            for config in configs:
                out = directory(tmp_path / f"{config.id}-{size}")
                result = sample_chunks(pool, config, plans, tiny_models["diffusion"], out, batch_size=3)
                made = {name: out.read_bytes(name) for name in out.listdir()}
                assert made == expected[config.id], (config.name, size)
                assert len({u["pid"] for u in result.units}) <= size


def test_one_pool_serves_concurrent_configurations_and_keeps_its_networks(ray_local, tiny_models, tmp_path):
    from concurrent.futures import ThreadPoolExecutor
    from dataclasses import replace

    from pipeline.generation.pool import sample_chunks

    plans = plan_chunks(NUM_IMAGES, 3)
    configs = (TRIAL, PAG, AUTO, TRIAL, replace(TRIAL, precision="bf16"))
    outs = [directory(tmp_path / f"{i}-{c.name}") for i, c in enumerate(configs)]
    with _pool(2) as pool:
        pool.wait_ready(2)
        with ThreadPoolExecutor(3) as threads:  # three trials at once, then two more
            jobs = [threads.submit(sample_chunks, pool, c, plans, tiny_models["diffusion"], out, batch_size=2)
                    for c, out in zip(configs, outs)]
            results = [job.result() for job in jobs]
        assert pool.status()["deaths"] == 0
    for config, out, result in zip(configs, outs, results):
        assert result.generated_images == NUM_IMAGES and [u["chunk"] for u in result.units] == [p.name for p in plans]
        assert np.array_equal(_images(out, plans), _direct(config, tiny_models, NUM_IMAGES)), config.name
    units = [u for r in results for u in r.units]
    assert len({u["pid"] for u in units}) == 2  # the configurations' chunks spread over both workers
    assert all(u["node_id"] and u["device"] == "cpu" for u in units)
    for pid in {u["pid"] for u in units}:  # each worker read the main model once, the guide once if it needed it
        mine = [u for u in units if u["pid"] == pid]
        served_auto = any(u["config_id"] == AUTO.id for u in mine)
        assert sum(u["models_loaded"] for u in mine) == 1 + served_auto


def test_a_dead_workers_chunk_is_queued_again(ray_local, tiny_models, tmp_path):
    import os
    import signal

    from pipeline.generation.pool import sample_chunks

    slow = SamplerConfig(guidance="cfg", strength=1.0, sampler="ddim", steps=30, seed=5)  # chunks outlast a poll
    plans, out = plan_chunks(NUM_IMAGES, 1), directory(tmp_path / "out")
    with _pool(1) as pool:
        pool.wait_ready(1)
        victim = pool.status()["placed"][0]["pid"]
        killed = []

        def kill_after_the_first_chunk(info):
            if not killed:
                os.kill(victim, signal.SIGKILL)  # as a lost node or a preempted instance would
                killed.append(victim)

        result = sample_chunks(pool, slow, plans, tiny_models["diffusion"], out, on_chunk=kill_after_the_first_chunk)
        assert pool.status()["deaths"] >= 1 and pool.status()["ready"] == 1
    pids = [u["pid"] for u in result.units]
    assert pids[0] == victim and pids[-1] != victim and result.generated_images == NUM_IMAGES
    assert np.array_equal(_images(out, plans), _direct(slow, tiny_models, NUM_IMAGES))


def test_a_worker_the_cluster_cannot_place_yet_waits_then_takes_work(ray_local, tiny_models, tmp_path):
    """Joined to a cluster the pool asks for every worker at once; one that does not fit waits (an
    autoscaler would add a node for it) and takes chunks as soon as it starts."""
    import ray

    from pipeline.generation.pool import sample_chunks

    @ray.remote(num_cpus=1)
    class Holder:  # holds one of the two CPUs, as another job on the cluster would
        def ping(self):
            return True

    holder = Holder.remote()
    ray.get(holder.ping.remote())
    plans = plan_chunks(NUM_IMAGES, 3)
    with _pool(2, joined=True) as pool:
        pool.wait_ready(1)
        first = sample_chunks(pool, TRIAL, plans[:1], tiny_models["diffusion"], directory(tmp_path / "a"))
        state = pool.status()
        assert (state["ready"], state["workers"]) == (1, 2)
        ray.kill(holder)  # the cluster grew
        pool.wait_ready(2)
        out = directory(tmp_path / "b")
        second = sample_chunks(pool, TRIAL, plans, tiny_models["diffusion"], out, batch_size=3)
    assert len({u["pid"] for u in second.units}) == 2 and first.units[0]["pid"] in {u["pid"] for u in second.units}
    assert np.array_equal(_images(out, plans), _direct(TRIAL, tiny_models, NUM_IMAGES))


def test_a_pool_no_worker_of_which_fits_fails_locally_at_once_and_on_a_cluster_after_the_wait(
        ray_local, tiny_models, tmp_path):
    from pipeline.generation.pool import sample_chunks
    from pipeline.resources import NotEnoughResourcesError

    with pytest.raises(NotEnoughResourcesError, match=r"sample: one sampler actor asks for 1 CPU, 1 GPU "
                                                      r"\(sample.cpus_per_actor, sample.use_gpu\) but this local Ray "
                                                      r"instance has 2 CPU, 0 GPU: no sampler actor could ever start"):
        _pool(1, gpus=1.0)
    said = []
    with _pool(1, joined=True, gpus=1.0, wait=3.0, said=said) as pool:
        with pytest.raises(NotEnoughResourcesError, match=r"waited \d+ s \(cluster.wait_timeout_s\) for one sampler "
                                                          r"actor \(1 CPU, 1 GPU\)"):
            sample_chunks(pool, TRIAL, plan_chunks(4, 4), tiny_models["diffusion"], directory(tmp_path / "x"))
    assert said[0].startswith("pool sample-pool-") and "1 x sampler actor (1 CPU, 1 GPU each)" in said[0]


def test_a_gpu_worker_without_cuda_fails_or_with_require_cuda_false_samples_on_cpu(ray_local, tiny_models, tmp_path):
    import torch

    from pipeline.generation.pool import sample_chunks
    from pipeline.resources import NoCudaError

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    plans = plan_chunks(4, 4)
    with _pool(1, sample_on_gpu=True) as pool:
        with pytest.raises(NoCudaError, match=r"sample: Ray gave this unit GPU \? on node [0-9a-f]+ .*no CUDA"):
            sample_chunks(pool, TRIAL, plans, tiny_models["diffusion"], directory(tmp_path / "x"))
    out = directory(tmp_path / "y")
    with _pool(1, sample_on_gpu=True, require_cuda=False) as pool:
        result = sample_chunks(pool, TRIAL, plans, tiny_models["diffusion"], out)
    assert result.units[0]["device"] == "cpu"
    assert np.array_equal(_images(out, plans), _direct(TRIAL, tiny_models, 4))
