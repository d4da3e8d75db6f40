"""Training on a two-node Ray cluster simulated on this machine: one worker per node, each
reading its own disjoint share of the shards in every epoch. The cluster is its own Ray, in
its own process, so it does not meet the session's `ray_local`."""
import pytest

from tests.training.conftest import run_own_cluster


@pytest.mark.slow
def test_two_nodes_one_worker_each_disjoint_shards(digits_shards):
    from pipeline.data.loader import ShardedDataset

    result, _ = run_own_cluster("tests.training.multinode_main", digits_shards)
    assert result["nimg"] == 256 and result["steps"] == 4
    a, b = sorted(result["records"], key=lambda r: r["rank"])
    assert len(set(result["nodes"])) == 2
    assert {a["node"], b["node"]} == set(result["nodes"])  # one worker on each node
    # the state records where each rank ran, gathered across the nodes (node types: no autoscaler labels here)
    assert [(w["rank"], w["node_id"], w["since_nimg"]) for w in result["workers"]] == [(0, a["node"], 0),
                                                                                     (1, b["node"], 0)]
    assert sorted(w["node_type"] for w in result["workers"]) == ["head", "worker"]
    assert a["first_batch_matches"] and b["first_batch_matches"]  # the loop streams what the loader gives the rank
    assert a["first_batch_sum"] != b["first_batch_sum"]
    shards = {e.name for e in ShardedDataset(digits_shards).shards("train")}
    for epoch in range(2):
        mine, theirs = set(a["epochs"][epoch]), set(b["epochs"][epoch])
        assert mine and theirs and not mine & theirs  # disjoint
        assert mine | theirs == shards  # and together the whole split
