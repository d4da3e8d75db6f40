"""Joins the cluster in RAY_ADDRESS and prints one JSON line: every node it has had (NodeID,
Alive, Resources, Labels, node_type), for tests/cluster/fake_cluster.py."""
import json

import ray


def main() -> None:
    from pipeline.resources import node_type_of

    ray.init(logging_level="ERROR", log_to_driver=False)
    try:
        nodes = [{"NodeID": n["NodeID"], "Alive": n["Alive"], "Resources": n.get("Resources", {}),
                  "Labels": n.get("Labels", {}), "node_type": node_type_of(n)} for n in ray.nodes()]
    finally:
        ray.shutdown()
    print(json.dumps(nodes))


if __name__ == "__main__":
    main()
