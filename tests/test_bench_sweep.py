"""`python -m pipeline.bench sweep`: runs on its own two-node cluster, the pool uses one node and then
both, and the images are the same. The ratio is not asserted: on a shared machine both simulated
nodes share its cores (the lead times it alone)."""
from __future__ import annotations

import math

import pytest


@pytest.mark.slow
def test_sweep_bench_runs_the_pool_on_one_node_then_two_and_the_images_match():
    from tests.training.conftest import run_own_cluster

    figures, _ = run_own_cluster("pipeline.bench", "sweep", "--quick", "--json", timeout=600)
    assert figures["bench"] == "sweep" and figures["quick"] is True
    assert figures["identical_images"] is True and figures["chunks"] == 4
    assert (figures["nodes_one_node"], figures["nodes_two_nodes"]) == (1, 2)
    assert figures["chunks_per_node_one_node"] == [4] and sum(figures["chunks_per_node_two_nodes"]) == 4
    assert math.isfinite(figures["ratio"]) and figures["ratio"] > 0


def test_sweep_bench_refuses_a_process_already_connected_to_ray(ray_local):
    from pipeline.benches import sweep

    with pytest.raises(RuntimeError, match="starts its own two-node Ray cluster: run it in a fresh process"):
        sweep.run(quick=True)
