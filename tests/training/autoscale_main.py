"""Run by test_cluster_wait.py in its own process: a Ray cluster simulated on this machine
(ray.cluster_utils.Cluster) that starts with a 1-CPU head and grows when this script adds
nodes, as an autoscaler would, plus a node whose GPU is a Ray resource only (no CUDA). Prints
one JSON line of what happened; the waiting messages go to stdout before it."""
import json
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor

import ray
from ray.cluster_utils import Cluster


def main(data: str) -> None:
    from pipeline.resources import NoCudaError, NotEnoughResourcesError, Placement, wait_until_placeable
    from pipeline.training.evalnet import EvalnetTask
    from pipeline.training.spec import TrainSpec
    from pipeline.training.trainer import fit
    from pipeline.weights import EvalnetArch

    task = EvalnetTask(EvalnetArch(in_channels=3, num_classes=10, width=8, blocks_per_stage=(1,)))
    spec = TrainSpec(kimg=0.256, batch_size=64, lr=1e-3, num_workers=2, seed=1, checkpoint_kimg=0.256,
                     log_kimg=0.128, max_failures=0)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    ray.init(address=cluster.address)
    out = {}
    try:
        # Nothing grows: a clear error once cluster.wait_timeout_s has passed.
        try:
            wait_until_placeable(spec.units, Placement("train_test", joined=True, wait_timeout_s=3, log_interval_s=1))
        except NotEnoughResourcesError as error:
            out["timeout"] = str(error)

        # A second node joins once the stage waits (Ray adds nodes from the main thread only, so
        # the stage trains in another): it waits for the node, then trains.
        waiting = threading.Event()

        def log(message):
            print(message, flush=True)
            if message.startswith("waiting for"):
                waiting.set()

        placement = Placement("train_test", joined=True, wait_timeout_s=300, log_interval_s=1, log=log)
        with ThreadPoolExecutor(1) as pool:
            training = pool.submit(fit, task, spec, data, tempfile.mkdtemp(prefix="autoscale-"), placement=placement)
            assert waiting.wait(timeout=120), "the stage never said it was waiting"
            cluster.add_node(num_cpus=1)
            state = training.result().state
        out["grown"] = {"nimg": state.nimg, "nodes": len([n for n in ray.nodes() if n["Alive"]])}

        # A "GPU" Ray can hand out but torch cannot use.
        cluster.add_node(num_cpus=1, num_gpus=1)
        gpu = TrainSpec(**{**spec.__dict__, "num_workers": 1, "use_gpu": True})
        try:
            fit(task, gpu, data, tempfile.mkdtemp(prefix="autoscale-"),
                placement=Placement("train_gpu_test", joined=True, require_cuda=True))
        except NoCudaError as error:
            out["no_cuda"] = str(error)
        state = fit(task, gpu, data, tempfile.mkdtemp(prefix="autoscale-"),
                    placement=Placement("train_gpu_test", joined=True, require_cuda=False)).state
        out["cpu_fallback"] = {"nimg": state.nimg}
        [out["gpu_node"]] = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU")]
    finally:
        ray.shutdown()
        cluster.shutdown()
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
