"""Run by test_multinode.py in its own process: a two-node Ray cluster simulated on this machine
(ray.cluster_utils.Cluster, one CPU per node), DiffusionTask with one worker per node. Prints
one JSON line: the per-rank records of ShardRecordingTask and the final state's summary, with
where the state says each rank ran."""
import json
import sys
import tempfile

import ray
from ray.cluster_utils import Cluster


def main(data: str) -> None:
    from pipeline.training.spec import TrainSpec
    from pipeline.training.trainer import fit
    from tests.training.tasks import ShardRecordingTask
    from tests.training.test_diffusion_resume import DIFFUSION, UNET

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    try:
        out = tempfile.mkdtemp(prefix="multinode-")
        spec = TrainSpec(kimg=0.256, batch_size=64, lr=1e-3, num_workers=2, seed=4, checkpoint_kimg=0.128,
                         ema_decays=(0.9,), log_kimg=0.128, max_failures=0)
        task = ShardRecordingTask(UNET, DIFFUSION, p_uncond=0.1, data=data, out_dir=out, seed=spec.seed)
        state = fit(task, spec, data, tempfile.mkdtemp(prefix="multinode-storage-")).state
        records = [json.load(open(f"{out}/rank{r}.json")) for r in range(2)]
        nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
        print(json.dumps({"records": records, "nimg": state.nimg, "steps": len(state.losses), "nodes": nodes,
                          "workers": state.workers}))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
