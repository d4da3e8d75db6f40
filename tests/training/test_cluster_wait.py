"""Joined to a cluster that can grow, a training stage waits for its workers to be placed
(logging what it waits for) instead of refusing, fails clearly after cluster.wait_timeout_s, and
a worker given a GPU that torch cannot use fails naming the node and the stage unless
cluster.require_cuda is false. The cluster is its own Ray in its own process."""
import re

import pytest

from tests.training.conftest import run_own_cluster


@pytest.mark.slow
def test_training_waits_for_the_cluster_to_grow_and_checks_cuda(digits_shards):
    result, printed = run_own_cluster("tests.training.autoscale_main", digits_shards, timeout=600)

    assert re.match(r"train_test: waited \d+ s \(cluster.wait_timeout_s\) for 2 x training worker \(1 CPU each\); "
                    r"the cluster has 1 CPU, 0 GPU", result["timeout"]), result["timeout"]
    assert "waiting for the cluster to place 2 x training worker (1 CPU each): it has 1 CPU, 0 GPU now" in printed
    assert "placed after" in printed
    assert result["grown"] == {"nimg": 256, "nodes": 2}

    assert result["no_cuda"].startswith("train_gpu_test: Ray gave this unit GPU 0 on node ")
    assert result["gpu_node"] in result["no_cuda"] and "sees no CUDA device there" in result["no_cuda"]
    assert "cluster.require_cuda: false" in result["no_cuda"]
    assert "cluster.require_cuda is false: computing on CPU" in printed
    assert result["cpu_fallback"] == {"nimg": 256}
