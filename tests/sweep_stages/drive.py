"""`python -m tests.sweep_stages.drive WORKDIR [--two-nodes] [--set KEY=VALUE ...]`: the tiny
sweep graph (random-weight models, tiny.yaml) through the real runner, with its store and MLflow
in WORKDIR, in a process of its own (so it can be killed, or own a Ray cluster).

--two-nodes: first start a simulated two-node Ray cluster (ray.cluster_utils.Cluster, one CPU
per node) and run the pipeline against it; it is shut down on exit.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.sweep_stages import MODULES

TINY = Path(__file__).with_name("tiny.yaml")


def overrides(root: Path) -> list[str]:
    return ["--set", f"store.root={root / 'runs'}", "--set", f"tracking.uri=sqlite:///{root / 'mlflow.db'}",
            "--set", f"tracking.artifact_location={root / 'mlruns'}"]


def main(argv: list[str]) -> int:
    from pipeline.run import main as run_main

    root = Path(argv[0]).resolve()
    rest = argv[1:]
    cluster = None
    if rest and rest[0] == "--two-nodes":
        rest = rest[1:]
        from ray.cluster_utils import Cluster

        repo = str(Path(__file__).resolve().parents[2])
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        rest += ["--set", f"cluster.address={cluster.address}"]
    try:
        return run_main(["--config", str(TINY), "--set", "cluster.num_cpus=2", *overrides(root), *rest],
                        stage_modules=MODULES)
    finally:
        if cluster is not None:
            import ray

            ray.shutdown()
            cluster.shutdown()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
