"""One pool of Ray actors serving (configuration, index range) chunks and feature tasks to every
caller of a stage: the `sample` stage, `evaluate` and `reference_stats`, and every trial of a sweep.

Shape. A stage starts a `Pool`: a named coordinator actor (asyncio, no resources, pinned to the
driver's node so an autoscaler never removes its node) that starts the worker actors
(pipeline.generation.workers.ChunkWorker, each asking Ray for one unit: CPUs, a GPU when the config
says so; spread over the nodes) and keeps one queue of tasks for all its jobs. Each worker takes
the next task as soon as it is free, so one configuration's chunks spread over every worker and
many configurations keep every worker busy; feature tasks go before sampling tasks (they finish a
trial). A caller submits a job (a list of tasks) and polls for its results, in the driver or in any
other process of the run: the sweep's Ray Tune trials find the pool by its name (`Pool.attach`) in
the run's namespace. Tune keeps what it is good at - one trial per configuration, their
concurrency, failures, results and callbacks - while the GPUs belong to the pool and not to
trials, so a configuration is never confined to the device of its trial and a wide sweep never
leaves a GPU idle. (Feeding the pool from the sweep driver alone would leave Tune nothing to do.)

Elastic. The pool does not assume the cluster has its final size: a worker that cannot be placed
yet stays pending (its resource request is the demand an autoscaler adds nodes for) and takes work
once it starts. Joined to a cluster, a pool with work queued and no worker started waits, the
callers logging what it waits for, up to cluster.wait_timeout_s, then fails naming the resources.
A private local instance starts only the workers its totals hold (pipeline.resources.pool_size)
and fails at once if it holds none. A worker that dies (node lost, preempted) has its task put
back at the head of the queue and is replaced; after `max_deaths` deaths the pool fails.

Images depend on (configuration, i) only, so the chunks are byte-identical whatever the pool size
and placement; chunk files are written by the workers (nothing large goes through the
coordinator), and feature statistics come back as object references the caller fetches.
"""
from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Optional

from pipeline.generation.chunks import ChunkPlan, missing_chunks, plan_chunks
from pipeline.generation.sampler_config import SamplerConfig
from pipeline.generation.workers import ChunkWorker, SampleTask, WorkerSpec
from pipeline.resources import NotEnoughResourcesError, Placement, Units, pool_size

# Function-local imports: they bring in Ray, which importing this module does not need.

PRIORITY = {"features": 0, "sample": 1}
POLL_S = 5.0


class _Job:
    def __init__(self, total: int):
        self.total, self.finished, self.out, self.error = total, 0, [], None
        self.event = asyncio.Event()


class Coordinator:
    """The pool's named actor (asyncio): its workers, its queue, its jobs."""

    def __init__(self, worker: WorkerSpec, units: Units, count: int, wait_timeout_s: float, max_deaths: int):
        self.worker, self.units, self.count = worker, units, count
        self.wait_timeout_s, self.max_deaths = wait_timeout_s, max_deaths
        self.jobs: dict[int, _Job] = {}
        self.job_ids, self.sequence = itertools.count(), itertools.count()
        self.ready: dict[int, dict] = {}
        self.deaths, self.error, self.closed = 0, None, False
        self.created = time.monotonic()
        self.first_ready_s: Optional[float] = None
        self.starved_since: Optional[float] = None
        self.queue = self.tasks = None

    async def start(self) -> int:
        import ray

        self.queue = asyncio.PriorityQueue()
        bundle = self.units.bundle()
        self.actor_class = ray.remote(ChunkWorker).options(
            num_cpus=bundle["CPU"], num_gpus=bundle.get("GPU", 0), scheduling_strategy="SPREAD",
            max_restarts=0, max_task_retries=0)
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self._slot(slot)) for slot in range(self.count)]
        self.tasks.append(loop.create_task(self._watch()))
        return self.count

    def _fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        for job in self.jobs.values():
            job.event.set()

    async def _slot(self, slot: int) -> None:
        import ray
        from ray.exceptions import RayActorError

        while not self.closed and self.error is None:
            actor = self.actor_class.remote(self.worker)
            try:
                where = await actor.ready.remote()  # pending until the cluster places it
            except RayActorError as exc:
                self._died(exc)
                await asyncio.sleep(1.0)
                continue
            except Exception as exc:  # noqa: BLE001 - the unit's own error (a GPU without CUDA): every job fails
                self._fail(exc)
                return
            self.ready[slot] = where
            self.starved_since = None
            if self.first_ready_s is None:
                self.first_ready_s = time.monotonic() - self.created
            try:
                await self._serve(actor)
            except RayActorError as exc:
                self._died(exc)
            finally:
                self.ready.pop(slot, None)
                ray.kill(actor, no_restart=True)

    async def _serve(self, actor) -> None:
        from ray.exceptions import RayActorError

        while not self.closed:
            item = await self.queue.get()
            _, _, job_id, index, kind, task = item
            job = self.jobs.get(job_id)
            if job is None or job.error is not None:
                continue  # cancelled or failed
            try:
                if kind == "features":
                    info_ref, parts_ref = actor.features.options(num_returns=2).remote(task)
                    result = (index, await info_ref, parts_ref)
                else:
                    result = (index, await getattr(actor, kind).remote(task), None)
            except RayActorError:
                self.queue.put_nowait(item)  # its task goes back where it was in the queue
                raise
            except Exception as exc:  # noqa: BLE001 - the task's error fails its job
                job.error = exc
            else:
                job.out.append(result)
                job.finished += 1
            job.event.set()

    def _died(self, exc: BaseException) -> None:
        self.deaths += 1
        if self.deaths > self.max_deaths:
            self._fail(RuntimeError(f"{self.worker.stage}: {self.deaths} {self.units.kind}s died (more than "
                                    f"{self.max_deaths}); the last: {exc}"))

    async def _watch(self) -> None:
        """Fail every job when work has waited for a first worker longer than wait_timeout_s."""
        import ray

        while not self.closed:
            await asyncio.sleep(1.0)
            if self.ready or self.queue.empty():
                self.starved_since = None
                continue
            self.starved_since = self.starved_since or time.monotonic()
            waited = time.monotonic() - self.starved_since
            if waited > self.wait_timeout_s and self.error is None:
                have = ray.cluster_resources()
                self._fail(NotEnoughResourcesError(
                    f"{self.worker.stage}: waited {waited:.0f} s (cluster.wait_timeout_s) for one {self.units.kind} "
                    f"({self.units.each()}); the cluster has {have.get('CPU', 0):g} CPU, {have.get('GPU', 0):g} GPU. "
                    "Check that the autoscaler has a node type that offers it and room to add it (max_workers), "
                    "or raise cluster.wait_timeout_s"))

    async def submit(self, kind: str, tasks: list) -> int:
        if kind not in PRIORITY:
            raise ValueError(f"unknown kind of task {kind!r}")
        job_id = next(self.job_ids)
        self.jobs[job_id] = _Job(len(tasks))
        for index, task in enumerate(tasks):
            self.queue.put_nowait((PRIORITY[kind], next(self.sequence), job_id, index, kind, task))
        return job_id

    async def poll(self, job_id: int, timeout: float):
        """(results since the last poll, state), waiting up to `timeout` s for one."""
        job = self.jobs[job_id]
        if not job.out and job.error is None and self.error is None and job.finished < job.total:
            try:
                await asyncio.wait_for(job.event.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        job.event.clear()
        out, job.out = job.out, []
        error = job.error or self.error
        done = job.finished == job.total
        if done or error is not None:
            self.jobs.pop(job_id, None)
        return out, {"done": done, "error": error, **self.status()}

    async def cancel(self, job_id: int) -> None:
        job = self.jobs.pop(job_id, None)
        if job is not None:
            job.error = RuntimeError("cancelled")

    def status(self) -> dict:
        return {"ready": len(self.ready), "workers": self.count, "deaths": self.deaths,
                "queued": self.queue.qsize() if self.queue is not None else 0,
                "waiting_s": time.monotonic() - self.starved_since if self.starved_since else 0.0,
                "first_ready_s": self.first_ready_s, "placed": list(self.ready.values()),
                "unit": f"{self.units.kind} ({self.units.each()})"}

    async def close(self) -> None:
        self.closed = True
        for task in self.tasks or []:
            task.cancel()


@dataclass
class Pool:
    """A caller's handle on a pool (see the module docstring): `run` a job, `close` it at the end."""

    handle: object
    name: str
    placement: Optional[Placement] = None
    said_at: float = field(default=0.0)
    workers: int = 0  # how many it started with (0: attached, not started, by this process)

    @classmethod
    def start(cls, units: Units, worker: WorkerSpec, placement: Placement, unit_knobs: str,
              beside: Optional[Units] = None, max_deaths: Optional[int] = None) -> "Pool":
        """Start a pool of `units` (units.count workers at most: see pipeline.resources.pool_size)."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        count = pool_size(units, placement, unit_knobs, beside)
        name = f"{placement.stage}-pool-{uuid.uuid4().hex[:10]}"
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        handle = ray.remote(Coordinator).options(name=name, num_cpus=0, max_concurrency=1000, max_restarts=0,
                                                 scheduling_strategy=here).remote(
            worker, units, count, placement.wait_timeout_s, max_deaths if max_deaths is not None else 3 * count + 3)
        ray.get(handle.start.remote())
        placement.log(f"pool {name}: {count} x {units.kind} ({units.each()} each)")
        return cls(handle, name, placement, workers=count)

    @classmethod
    def attach(cls, name: str, placement: Optional[Placement] = None) -> "Pool":
        """The pool another process of the run started (a sweep trial finds the sweep's pool)."""
        import ray

        return cls(ray.get_actor(name), name, placement)

    def status(self) -> dict:
        import ray

        return ray.get(self.handle.status.remote())

    def wait_ready(self, count: int, timeout: float = 600.0) -> float:
        """Block until `count` workers have started (benchmarks time warm pools); the seconds since the pool started."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.status()
            if state["ready"] >= count:
                return state["first_ready_s"] or 0.0
            time.sleep(0.2)
        raise TimeoutError(f"{count} workers of pool {self.name} did not start within {timeout:g} s")

    def say_waiting(self, state: Optional[dict] = None) -> None:
        """Log (at the placement's interval) when work waits for a first worker to be placed."""
        if self.placement is None:
            return
        state = state or self.status()
        now = time.monotonic()
        if state["ready"] == 0 and state["queued"] and now - self.said_at >= self.placement.log_interval_s:
            self.said_at = now
            self.placement.log(f"waiting for the cluster to place a {state['unit']}: {state['queued']} task(s) "
                               f"queued ({state['waiting_s']:.0f} s of {self.placement.wait_timeout_s:g} s)")

    def run(self, kind: str, tasks: list, on_result: Optional[Callable[[dict], None]] = None) -> list:
        """Results of `tasks` in their order ("sample": info; "features": (info, object reference))."""
        import ray

        if not tasks:
            return []
        job = ray.get(self.handle.submit.remote(kind, list(tasks)))
        results, done = [None] * len(tasks), False
        try:
            while not done:
                out, state = ray.get(self.handle.poll.remote(job, POLL_S))
                for index, info, ref in out:
                    results[index] = info if ref is None else (info, ref)
                    if on_result is not None:
                        on_result(info)
                if state["error"] is not None:
                    raise state["error"]
                done = state["done"]
                self.say_waiting(state)
        finally:
            if not done:
                self.handle.cancel.remote(job)
        return results

    @staticmethod
    def fetch(value):
        import ray

        return ray.get(value)

    def close(self) -> None:
        import ray

        try:
            ray.get(self.handle.close.remote(), timeout=30)
        finally:
            ray.kill(self.handle)

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------------------------
# Sample sets


@dataclass
class PoolResult:
    num_chunks: int
    reused_chunks: int
    generated_images: int
    seconds: float            # wall time from the first chunk submitted to the last written
    startup_seconds: float    # the pool started until its first worker was ready (models load with the first chunk)
    chunk_seconds: list[float] = field(default_factory=list)
    chunk_cpu_seconds: list[float] = field(default_factory=list)  # CPU time of the worker per chunk
    units: list[dict] = field(default_factory=list)  # per chunk made: where (node id, node type, device), seconds

    @property
    def images_per_s(self) -> float:
        return self.generated_images / self.seconds if self.seconds > 0 else 0.0

    @property
    def images_per_worker_s(self) -> float:
        """Images per second of one worker (comparable between configurations whatever else ran)."""
        busy = sum(self.chunk_seconds)
        return self.generated_images / busy if busy > 0 else 0.0


def sample_chunks(executor, config: SamplerConfig, plans: list[ChunkPlan], diffusion_location: str, out, *,
                  classifier_location: Optional[str] = None, batch_size: int = 250, where_dir: Optional[str] = None,
                  on_chunk: Optional[Callable[[dict], None]] = None) -> PoolResult:
    """Generate every planned chunk missing from `out` (a store Directory) on `executor` (a Pool,
    or workers.InProcess); `where_dir` collects the chunks' where-made records."""
    todo = missing_chunks(out, plans)
    result = PoolResult(num_chunks=len(plans), reused_chunks=len(plans) - len(todo), generated_images=0,
                        seconds=0.0, startup_seconds=0.0)
    if not todo:
        return result
    tasks = [SampleTask(config.to_dict(), diffusion_location, classifier_location, out.uri, tuple(p), batch_size,
                        where_dir) for p in todo]
    started = time.perf_counter()
    for info in executor.run("sample", tasks, on_chunk):
        result.generated_images += info["num_images"]
        result.chunk_seconds.append(info["seconds"])
        result.chunk_cpu_seconds.append(info["cpu_seconds"])
        result.units.append(info)
    result.seconds = time.perf_counter() - started
    return result


def generate_parallel(config: SamplerConfig, num_images: int, diffusion_location: str, out, *,
                      classifier_location: Optional[str] = None, num_actors: int = 2, chunk_size: int = 500,
                      batch_size: int = 250, threads: int = 1, num_gpus: float = 0.0, require_cuda: bool = True,
                      on_chunk: Optional[Callable[[dict], None]] = None) -> PoolResult:
    """Every missing chunk of images 0 .. ``num_images`` - 1 of ``config`` into ``out`` on a pool of
    ``num_actors`` workers (``threads`` CPUs each; a GPU each with ``num_gpus``), started for this
    call and timed warm: ``seconds`` runs from the moment every worker is ready."""
    plans = plan_chunks(num_images, chunk_size)
    todo = missing_chunks(out, plans)
    if not todo:
        return sample_chunks(None, config, plans, diffusion_location, out)
    units = Units("sampler actor", min(num_actors, len(todo)), cpus=float(threads), gpus=float(num_gpus),
                  knob="num_actors")
    worker = WorkerSpec(stage="sample", sample_on_gpu=num_gpus > 0, require_cuda=require_cuda, threads=threads)
    placement = Placement(stage="sample", require_cuda=require_cuda, log=lambda message: None)
    with Pool.start(units, worker, placement, "threads, num_gpus") as pool:
        startup = pool.wait_ready(pool.status()["workers"])
        result = sample_chunks(pool, config, plans, diffusion_location, out, classifier_location=classifier_location,
                               batch_size=batch_size, on_chunk=on_chunk)
    result.startup_seconds = startup
    return result
