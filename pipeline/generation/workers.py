"""The unit of work of the generation pools: a worker that samples chunks of a configuration's
images and extracts the features of chunks or shards, keeping what it loaded.

`ChunkWorker` is the body of every pool actor (pipeline.generation.pool wraps it with ray.remote;
`InProcess` runs one in this process, the pool's interface without Ray, for tests and small
runs). It keeps the networks it loaded in a bounded LRU cache keyed by (what, store location,
device) - a train_diffusion output's URI names its store key - so a pool switching between
configurations (a sweep's trials) does not read the store again; the feature extractors likewise.
Chunks are sampled on generate's fast path (pipeline.generation.inference): each chunk's Models
prepares its networks on first use (the cached fp32 network turned channels-last in place, which
keeps its values; a fresh bf16 copy for precision bf16), a cost of about one forward pass against
the thousands of a chunk, and nothing a configuration prepared outlives its chunk.

- `SampleTask`: images start .. stop - 1 of one configuration -> a chunk file written atomically
  into the task's directory (pipeline.generation.chunks), and, when the task names a directory for
  them, a small JSON beside it saying where the chunk was made (Ray node id, node type, device),
  written before the chunk so that every chunk present has one.
- `pipeline.generation.features.FeatureTask`: features of chunks or shards -> mergeable statistics.
Image i is a function of (configuration, i) only (pipeline.generation.generate): which worker makes
a chunk, on which node, never changes its bytes.
"""
from __future__ import annotations

import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from pipeline.generation.chunks import ChunkPlan, encode_chunk
from pipeline.generation.features import FeatureTask, extract
from pipeline.generation.generate import generate
from pipeline.generation.models import load_models
from pipeline.generation.sampler_config import SamplerConfig
from pipeline.generation.scoring import make_extractors
from pipeline.resources import unit_device, unit_location
from pipeline.store import Directory

WHERE_KEYS = ("node_id", "node_type", "node_ip", "accelerator", "pid")


@dataclass(frozen=True)
class WorkerSpec:
    stage: str                      # named in errors (a GPU unit without CUDA)
    sample_on_gpu: bool = False     # chunks sampled on CUDA (sample.use_gpu / sweep.use_gpu)
    features_on_gpu: bool = False   # features extracted on CUDA (eval.use_gpu)
    require_cuda: bool = True       # cluster.require_cuda (pipeline.resources.unit_device)
    threads: int = 1                # torch intra-op threads: the CPUs the unit asked Ray for
    max_models: int = 6             # networks kept: main, guide and classifier of a few configurations
    max_extractors: int = 2         # extractor sets kept


@dataclass(frozen=True)
class SampleTask:
    config: dict                    # SamplerConfig.to_dict()
    diffusion: str                  # train_diffusion output (its guide/ inside)
    classifier: Optional[str]       # train_classifier output, for classifier guidance
    out: str                        # the directory the chunk goes to
    chunk: tuple[int, int, int]     # ChunkPlan (index, start, stop)
    batch_size: int
    where_dir: Optional[str] = None  # where-it-was-made JSONs go here (None: not written)


class LRU:
    """At most `size` values, the least recently used dropped first; `loads` counts misses."""

    def __init__(self, size: int):
        self.size, self.items, self.loads = size, OrderedDict(), 0

    def get(self, key, load: Callable[[], Any]):
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        value = load()
        self.loads += 1
        self.items[key] = value
        while len(self.items) > self.size:
            self.items.popitem(last=False)
        return value


def where_file(plan_name: str) -> str:
    return plan_name.replace(".npz", ".json")


WHERE_RECORD = ("chunk", "task", "start", "stop", "num_images", "node_id", "node_type", "node_ip", "accelerator",
                "device", "resources", "pid", "seconds")


def where_record(info: dict) -> dict:
    """What the outputs record of a unit of work: where it ran (and on what), what it did."""
    return {k: info[k] for k in WHERE_RECORD if k in info}


def where_records(directory, plans) -> list[dict]:
    """The where-made records of a sample set's chunks (SampleTask.where_dir), in chunk order."""
    found = []
    for plan in plans:
        rel = where_file(plan.name)
        found.append(where_record(directory.read_json(rel)) if directory.exists(rel) else {"chunk": plan.name})
    return found


def count_by(records: list[dict], key: str) -> dict[str, int]:
    """How many records have each value of `key` (node id, node type)."""
    counts: dict[str, int] = {}
    for record in records:
        value = str(record.get(key) or "")
        counts[value] = counts.get(value, 0) + 1
    return counts


def where_tags(records: list[dict], prefix: str = "units") -> dict[str, str]:
    """Tracking tags saying where units of work ran: {node id: count} and {node type: count} as JSON."""
    return {f"{prefix}.nodes": json.dumps(count_by(records, "node_id"), sort_keys=True)[:5000],
            f"{prefix}.node_types": json.dumps(count_by(records, "node_type"), sort_keys=True)[:5000]}


class ChunkWorker:
    def __init__(self, spec: WorkerSpec):
        torch.set_num_threads(max(1, int(spec.threads)))
        self.spec = spec
        self.models = LRU(spec.max_models)
        self.extractors = LRU(spec.max_extractors)
        self._devices = None
        self._where: Optional[dict] = None

    def devices(self):
        """(sampling device, feature device): CUDA for GPU work, or per cluster.require_cuda."""
        if self._devices is None:
            s = self.spec
            self._devices = (unit_device(s.stage, s.sample_on_gpu, s.require_cuda),
                             unit_device(s.stage, s.features_on_gpu, s.require_cuda))
        return self._devices

    def where(self) -> dict:
        if self._where is None:
            import os

            self._where = {**unit_location(), "pid": os.getpid()}
        return self._where

    def ready(self) -> dict:
        """Resolve the devices (a GPU unit without CUDA fails here) and say where the worker runs."""
        sample_device, feature_device = self.devices()
        return {**self.where(), "sample_device": str(sample_device), "feature_device": str(feature_device)}

    def _provenance(self, device) -> dict:
        where = self.where()
        return {**{k: where[k] for k in WHERE_KEYS}, "resources": where["resources"], "device": str(device)}

    def sample(self, task: SampleTask) -> dict:
        device = self.devices()[0]
        config = SamplerConfig.from_dict(task.config)
        plan = ChunkPlan(*task.chunk)
        loads = self.models.loads
        models = load_models(config, task.diffusion, task.classifier, device, cached=self.models.get)
        started, cpu_started = time.perf_counter(), time.process_time()
        images, labels = generate(config, models, plan.indices, task.batch_size)
        data = encode_chunk(images, labels, plan.indices)
        info = {"chunk": plan.name, "start": plan.start, "stop": plan.stop, "num_images": len(labels),
                "seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu_started,
                "bytes": len(data), "models_loaded": self.models.loads - loads, "config_id": config.id,
                **self._provenance(device)}
        if task.where_dir is not None:
            Directory.at(task.where_dir).write_json(where_file(plan.name), info)
        Directory.at(task.out).write_bytes(plan.name, data)
        return info

    def features(self, task: FeatureTask) -> tuple[dict, dict]:
        """(info, {extractor name: FeatureAccumulator}) of the task's run of samples."""
        device = self.devices()[1]
        loads = self.extractors.loads
        extractors, notes = self.extractors.get((task.extractor_key(), str(device)),
                                                lambda: make_extractors(task.eval_cfg, task.evalnet, str(device)))
        started = time.perf_counter()
        parts = extract(task, extractors)
        count = next(iter(parts.values())).count
        info = {"task": task.source.label, "start": task.source.start, "num_images": count,
                "seconds": time.perf_counter() - started, "extractors_loaded": self.extractors.loads - loads,
                "notes": list(notes), **self._provenance(device)}
        return info, parts


class InProcess:
    """The pool's interface on one ChunkWorker in this process: tasks run one after another."""

    def __init__(self, spec: WorkerSpec):
        self.worker = ChunkWorker(spec)
        self.worker.ready()

    def run(self, kind: str, tasks: list, on_result: Optional[Callable[[dict], None]] = None) -> list:
        results = []
        for task in tasks:
            result = getattr(self.worker, kind)(task)
            if on_result is not None:
                on_result(result[0] if kind == "features" else result)
            results.append(result)
        return results

    @staticmethod
    def fetch(value):
        return value

    def close(self) -> None:
        pass
