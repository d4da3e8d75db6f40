"""The `sweep` benchmark: one sweep configuration's N images on the sampler pool spread over two
nodes, against the same pool on one node.

The bench starts its own local two-node Ray cluster (ray.cluster_utils.Cluster: a head node and a
worker node, one CPU each; never `ray stop`) and generates one configuration (CFG, DDIM) the way a
sweep trial does: its (configuration, index range) chunks handed to a pool of sampler actors
(pipeline.generation.pool: one CPU and one torch thread per actor). The clock starts once every
actor of the pool is ready and warm (it has loaded the model and sampled one chunk into a scratch
set). First with one actor (the pool on one node), then with two (SPREAD: one on each node), the
same chunks. ``ratio`` = one-node seconds /
two-node seconds (ideal 2: the chunks are equal work and every actor takes the next chunk as soon
as it is free). The two sample sets are checked byte-identical (image i depends on (seed, i)
only), and each run's chunks are checked to have been made on one and on two Ray nodes
(``nodes_one_node`` / ``nodes_two_nodes``, from the node id each chunk records).

Run it in a fresh process (it connects the process to the cluster it starts): `python -m
pipeline.bench sweep`. On a shared machine both nodes share its cores; ``cpu_share_*`` (the
actors' CPU time / (wall time x actors); 1.0 = each actor had a core to itself) says when the
ratio measured the machine's load rather than the pool.
"""
from __future__ import annotations

import os
import shutil
import tempfile

from pipeline.resources import Placement, Units

# Function-local imports: they bring in torch, Ray and SciPy, which importing this module does not need.

NODES = 2
FULL = dict(unet=dict(image_size=16, in_channels=3, base_channels=32, channel_mult=[1, 2], num_res_blocks=1,
                      attention_resolutions=[8], num_head_channels=32, num_classes=10, learn_sigma=True,
                      resblock_updown=True),
            steps=20, num_images=192, chunk_size=16, batch_size=16)
QUICK = dict(unet=dict(image_size=8, in_channels=3, base_channels=16, channel_mult=[1, 2], num_res_blocks=1,
                       attention_resolutions=[4], num_head_channels=16, num_classes=10, learn_sigma=True,
                       resblock_updown=True),
             steps=3, num_images=16, chunk_size=4, batch_size=4)


def _sample_set(out) -> dict[str, bytes]:
    return {name: out.read_bytes(name) for name in sorted(out.listdir()) if name.endswith(".npz")}


def _warm_pool_run(config, model: str, out, scratch, actors: int, setup: dict):
    """The configuration's chunks into `out` on a pool of `actors`, timed from warm actors."""
    from pipeline.generation import plan_chunks
    from pipeline.generation.pool import Pool, sample_chunks
    from pipeline.generation.workers import WorkerSpec

    units = Units("sampler actor", actors, cpus=1.0, knob="actors")
    placement = Placement(stage="sweep", log=lambda message: None)
    chunk, batch = setup["chunk_size"], setup["batch_size"]
    with Pool.start(units, WorkerSpec(stage="sweep", threads=1), placement, "1 CPU per actor") as pool:
        startup = pool.wait_ready(actors)
        sample_chunks(pool, config, plan_chunks(actors * chunk, chunk), model, scratch, batch_size=batch)
        result = sample_chunks(pool, config, plan_chunks(setup["num_images"], chunk), model, out, batch_size=batch)
    result.startup_seconds = startup
    return result


def pool_runs(root: str, setup: dict) -> dict:
    """The configuration's images with a pool of 1 and of NODES actors on the connected cluster."""
    from pipeline.benches.eval import _directory, _model_dir
    from pipeline.generation import SamplerConfig, nfe_per_image
    from pipeline.generation.workers import count_by

    model = _model_dir(root, setup["unet"])
    config = SamplerConfig(guidance="cfg", strength=1.0, sampler="ddim", steps=setup["steps"], seed=0)
    figures, sets = {}, {}
    for actors, label in ((1, "one_node"), (NODES, "two_nodes")):
        out = _directory(os.path.join(root, f"samples-{label}"))
        result = _warm_pool_run(config, model, out, _directory(os.path.join(root, f"warm-{label}")), actors, setup)
        nodes = count_by(result.units, "node_id")
        figures.update({f"seconds_{label}": result.seconds, f"images_per_s_{label}": result.images_per_s,
                        f"nodes_{label}": len(nodes), f"chunks_per_node_{label}": sorted(nodes.values()),
                        f"cpu_share_{label}": sum(result.chunk_cpu_seconds) / (result.seconds * actors),
                        f"startup_s_{label}": round(result.startup_seconds, 3)})
        sets[label] = _sample_set(out)
    if figures["nodes_two_nodes"] != NODES or figures["nodes_one_node"] != 1:
        raise AssertionError(f"the pools ran on {figures['nodes_one_node']} and {figures['nodes_two_nodes']} nodes, "
                             f"expected 1 and {NODES}")
    if sets["one_node"] != sets["two_nodes"] or not sets["one_node"]:
        raise AssertionError("the pool on one node and on two nodes wrote different images")
    figures.update({"ratio": figures["seconds_one_node"] / figures["seconds_two_nodes"], "identical_images": True,
                    "num_images": setup["num_images"], "chunks": len(sets["one_node"]),
                    "nfe_per_image": nfe_per_image(config)})
    return figures


def run(quick: bool = False) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        raise RuntimeError("the sweep bench starts its own two-node Ray cluster: run it in a fresh process "
                           "(python -m pipeline.bench sweep)")
    root = tempfile.mkdtemp(prefix="pipeline-bench-sweep-")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        for _ in range(NODES - 1):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        figures = pool_runs(root, QUICK if quick else FULL)
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    figures["quick"] = quick
    return figures
