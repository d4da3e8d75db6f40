"""Joins the cluster in RAY_ADDRESS and runs N tasks of one CPU and one GPU each that wait for
one another (so all N hold a GPU at the same time, on N one-GPU nodes); prints one JSON line:
where each ran (pipeline.resources.this_node, the GPU ids Ray gave it) and the seconds taken."""
import json
import sys
import time

import ray


@ray.remote(num_cpus=0)
class Barrier:
    def __init__(self):
        self.arrived = 0

    def arrive(self) -> None:
        self.arrived += 1

    def count(self) -> int:
        return self.arrived


@ray.remote(num_cpus=1, num_gpus=1, max_retries=0)
def hold_a_gpu(barrier, parties: int, timeout: float) -> dict:
    from pipeline.resources import this_node

    ray.get(barrier.arrive.remote())
    deadline = time.monotonic() + timeout
    while ray.get(barrier.count.remote()) < parties:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {ray.get(barrier.count.remote())} of {parties} tasks got a GPU")
        time.sleep(0.2)
    return {**this_node(), "gpu_ids": [str(i) for i in ray.get_gpu_ids()]}


def main(parties: int) -> None:
    ray.init(logging_level="ERROR")
    try:
        started = time.monotonic()
        barrier = Barrier.remote()
        placed = ray.get([hold_a_gpu.remote(barrier, parties, 240.0) for _ in range(parties)])
        seconds = time.monotonic() - started
    finally:
        ray.shutdown()
    print(json.dumps({"placed": placed, "seconds": seconds}))


if __name__ == "__main__":
    main(int(sys.argv[1]))
