"""A pool of Ray actors generating a configuration's images chunk by chunk into a store directory.

Each actor loads the models once (pipeline.generation.models.load_models), runs torch with
``threads`` intra-op threads, and takes chunks of image indices from the driver, one at a time;
it writes each finished chunk itself (atomically, chunks.write_chunk), so nothing large goes
through the object store. Chunks already in the directory are skipped: a re-run after an
interruption generates only the missing ones. The images do not depend on the number of
actors, on ``batch_size`` or on which actor takes which chunk (see generate.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from pipeline.generation.chunks import ChunkPlan, missing_chunks, plan_chunks, write_chunk
from pipeline.generation.generate import generate
from pipeline.generation.models import load_models
from pipeline.generation.sampler_config import SamplerConfig


ACTOR_RESTARTS = 3


class SamplerWorker:
    """The actor body (wrapped with ray.remote by ``generate_parallel``)."""

    def __init__(self, config: dict, diffusion_location: str, classifier_location: Optional[str], out_uri: str,
                 batch_size: int, threads: int = 1, device: str = "cpu"):
        import torch

        from pipeline.store import Directory

        torch.set_num_threads(threads)
        self.config = SamplerConfig.from_dict(config)
        self.models = load_models(self.config, diffusion_location, classifier_location, device)
        self.out = Directory.at(out_uri)
        self.batch_size = batch_size

    def ready(self) -> bool:
        return True

    def run_chunk(self, plan: tuple[int, int, int]) -> dict:
        plan = ChunkPlan(*plan)
        started, cpu_started = time.perf_counter(), time.process_time()
        images, labels = generate(self.config, self.models, plan.indices, self.batch_size)
        size = write_chunk(self.out, plan, images, labels)
        return {"chunk": plan.index, "num_images": len(labels), "seconds": time.perf_counter() - started,
                "cpu_seconds": time.process_time() - cpu_started, "bytes": size}


@dataclass
class PoolResult:
    num_chunks: int
    reused_chunks: int
    generated_images: int
    seconds: float            # wall time from the first chunk submitted to the last written
    startup_seconds: float    # actors started and models loaded
    chunk_seconds: list[float] = field(default_factory=list)
    chunk_cpu_seconds: list[float] = field(default_factory=list)  # CPU time of the actor per chunk

    @property
    def images_per_s(self) -> float:
        return self.generated_images / self.seconds if self.seconds > 0 else 0.0


def generate_parallel(config: SamplerConfig, num_images: int, diffusion_location: str, out, *,
                      classifier_location: Optional[str] = None, num_actors: int = 2, chunk_size: int = 500,
                      batch_size: int = 250, threads: int = 1, num_gpus: float = 0.0,
                      on_chunk: Optional[Callable[[dict], None]] = None) -> PoolResult:
    """Generate every missing chunk of images 0 .. ``num_images`` - 1 of ``config`` into ``out``
    (a pipeline.store Directory) on ``num_actors`` Ray actors (``threads`` CPUs each; ``num_gpus``
    each on a GPU cluster)."""
    import ray

    plans = plan_chunks(num_images, chunk_size)
    todo = missing_chunks(out, plans)
    result = PoolResult(num_chunks=len(plans), reused_chunks=len(plans) - len(todo), generated_images=0,
                        seconds=0.0, startup_seconds=0.0)
    if not todo:
        return result
    t0 = time.perf_counter()
    device = "cuda" if num_gpus > 0 else "cpu"
    # A sampler process that dies (node lost, OOM, killed) is restarted and its chunk run again:
    # chunks are deterministic and written atomically, so a retry writes the same bytes.
    actor_cls = ray.remote(num_cpus=threads, num_gpus=num_gpus, max_restarts=ACTOR_RESTARTS,
                           max_task_retries=ACTOR_RESTARTS)(SamplerWorker)
    actors = [actor_cls.remote(config.to_dict(), diffusion_location, classifier_location, out.uri, batch_size,
                               threads, device)
              for _ in range(min(num_actors, len(todo)))]
    try:
        ray.get([a.ready.remote() for a in actors])
        result.startup_seconds = time.perf_counter() - t0
        started = time.perf_counter()
        queue = list(todo)
        running = {}
        for actor in actors:
            if queue:
                running[actor.run_chunk.remote(tuple(queue.pop(0)))] = actor
        while running:
            [done], _ = ray.wait(list(running), num_returns=1)
            actor = running.pop(done)
            info = ray.get(done)
            result.generated_images += info["num_images"]
            result.chunk_seconds.append(info["seconds"])
            result.chunk_cpu_seconds.append(info["cpu_seconds"])
            if on_chunk is not None:
                on_chunk(info)
            if queue:
                running[actor.run_chunk.remote(tuple(queue.pop(0)))] = actor
        result.seconds = time.perf_counter() - started
    finally:
        for actor in actors:
            ray.kill(actor)
    return result
