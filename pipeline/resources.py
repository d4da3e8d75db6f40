"""What each unit of a stage's work asks Ray for, when it can be placed, and what it computes on.

- `Units`: one stage's unit of work (training worker, sampler actor, feature extractor, trial,
  shard task), what one unit asks Ray for (CPUs, GPUs) and how many run at once. A stage
  declares its units (`StageSpec.units`, printed by `--dry-run`) and builds its Ray requests
  from the same object, so the plan shows what the run asks for.
- `Placement` and `wait_until_placeable`: a private local Ray instance never grows, so a request
  its totals cannot hold fails at once (GPUs it lacks even before Ray starts:
  `gpus_a_local_instance_lacks`). Joined to a cluster (`cluster.address` or RAY_ADDRESS),
  the request becomes a pending placement group (the demand an autoscaler scales up for) and the
  stage waits for it, logging what it waits for at intervals, up to `cluster.wait_timeout_s`.
- `this_node` (in the unit), `node_type_of`, `node_tags`: where a unit ran, the Ray node id and
  the autoscaler's node type, which stage outputs and MLflow record.
- `check_cuda` (driver) and `unit_device` (in the unit): a unit Ray gave a GPU computes on CUDA.
  Where torch sees no CUDA device, `cluster.require_cuda: true` (the default) fails naming the
  node and the stage; `false` logs a warning and computes on CPU (simulated clusters, tests).

Ray is imported inside the functions that need it.
"""
from __future__ import annotations

import logging
import math
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

logger = logging.getLogger(__name__)

DEFAULT_WAIT_TIMEOUT_S = 3600.0
WAIT_LOG_INTERVAL_S = 30.0


class NotEnoughResourcesError(RuntimeError):
    """A stage's units can never be placed on this Ray instance, or were not placed in time."""


class NoCudaError(RuntimeError):
    """A unit was given a GPU but torch sees no CUDA device there (cluster.require_cuda)."""


def _plural(count: float, word: str) -> str:
    return f"{count:g} {word}" + ("" if count == 1 else "s")


@dataclass(frozen=True)
class Units:
    kind: str                      # "training worker", "sampler actor", ...
    count: Optional[int]           # how many run at once; None: one per piece of work (see `per`)
    cpus: float = 1.0              # per unit
    gpus: float = 0.0              # per unit
    knob: str = ""                 # the config key that sets `count` (for error messages)
    per: str = ""                  # with count None: what one unit does ("shard to write")
    gpu_knob: str = field(default="", compare=False)  # the config key that asks for the GPUs (messages only)
    pool: bool = False             # a pool (pool_size): it starts with the units that fit, so one is enough

    def bundle(self) -> dict[str, float]:
        """One unit's Ray resource request."""
        return {"CPU": float(self.cpus), **({"GPU": float(self.gpus)} if self.gpus else {})}

    def each(self) -> str:
        asks = [_plural(self.cpus, "CPU")] + ([_plural(self.gpus, "GPU")] if self.gpus else [])
        return ", ".join(asks)

    def describe(self) -> str:
        """`2 x training worker (1 CPU, 1 GPU each)` / `one shard task per shard to write (1 CPU each)`."""
        how_many = f"{self.count} x {self.kind}" if self.count is not None else f"one {self.kind} per {self.per}"
        return f"{how_many} ({self.each()} each)"

    def shortfall(self, have: dict[str, float]) -> list[tuple[str, float, float]]:
        """(resource, needed, present) for each resource the cluster's totals cannot hold."""
        count = self.count or 1
        needed = {"CPU": count * self.cpus, "GPU": count * self.gpus}
        return [(name, need, have.get(name, 0.0)) for name, need in needed.items()
                if need and have.get(name, 0.0) < need]


@dataclass(frozen=True)
class Placement:
    """How a stage gets its units placed on the Ray it is connected to."""

    stage: str                                     # named in every message
    joined: bool = False                           # a cluster that may grow (autoscaler)
    wait_timeout_s: float = DEFAULT_WAIT_TIMEOUT_S
    require_cuda: bool = True
    log_interval_s: float = WAIT_LOG_INTERVAL_S
    log: Callable[[str], None] = field(default=print, compare=False)  # the driver's messages (waiting, warnings)

    @classmethod
    def from_config(cls, cluster_cfg, stage: str, log: Callable[[str], None] = print) -> "Placement":
        from pipeline.cluster import target_address

        return cls(stage=stage, joined=target_address(cluster_cfg) is not None,
                   wait_timeout_s=cluster_cfg.wait_timeout_s, require_cuda=cluster_cfg.require_cuda, log=log)


def _cluster_has(have: dict[str, float]) -> str:
    return f"{have.get('CPU', 0.0):g} CPU, {have.get('GPU', 0.0):g} GPU"


def refusal(units: Units, have: dict[str, float]) -> Optional[str]:
    """Why a Ray instance that never grows can never run `units` at once; None if it can."""
    problems = []
    for name, need, present in units.shortfall(have):
        per = units.cpus if name == "CPU" else units.gpus
        each = "one each" if per == 1 else f"{per:g} each"
        problems.append(f"{_plural(units.count or 1, units.kind)} need {_plural(need, name)} ({each}) but the "
                        f"Ray cluster has {present:g}")
    if not problems:
        return None
    remedy = f"lower {units.knob} or add nodes" if units.knob else "add nodes"
    return "; ".join(problems) + f": {remedy}"


def gpus_a_local_instance_lacks(declared: "Units | tuple[Units, ...]", cluster_cfg) -> Optional[str]:
    """Asked before Ray starts: why a private local instance could never give a stage's units
    their GPUs (it has cluster.num_gpus, else the GPUs torch sees here, and never grows); None when
    it can, or when joining a cluster, which may have (or autoscale to) GPUs this machine cannot see.
    A pool needs GPUs for one of its units (it starts those that fit), other units for all."""
    for units in declared if isinstance(declared, tuple) else (declared,):
        problem = _local_gpu_problem(units, cluster_cfg)
        if problem:
            return problem
    return None


def _local_gpu_problem(units: Units, cluster_cfg) -> Optional[str]:
    from pipeline.cluster import target_address

    if not units.gpus or units.count == 0 or target_address(cluster_cfg):
        return None
    have = cluster_cfg.num_gpus
    if have is None:
        import torch

        have = torch.cuda.device_count()
    needed = units.gpus if units.pool else (units.count or 1) * units.gpus
    if have >= needed:
        return None
    asked = f" ({units.gpu_knob})" if units.gpu_knob else ""
    return (f"{units.describe()}{asked} need {_plural(needed, 'GPU')} but this machine's private Ray instance has "
            f"{have} (set cluster.num_gpus, join a cluster with cluster.address, or ask for no GPU)")


def refuse_if_never_placeable(units: Units, placement: Placement) -> None:
    """On a private local instance (never grows): NotEnoughResourcesError now if its totals
    cannot hold the units. Joined to a cluster: nothing (it may grow)."""
    import ray

    if not placement.joined and units.count != 0:
        problem = refusal(units, ray.cluster_resources())
        if problem:
            raise NotEnoughResourcesError(problem)


def units_that_fit(units: Units, have: dict[str, float], beside: Optional[Units] = None) -> int:
    """How many of `units` (at most units.count) the totals `have` hold at once, beside one of
    `beside` (a sweep trial next to the sampler pool)."""
    return max(0, min([units.count or 1, *_fits_per_resource(units, have, beside, 1)]))


def _fits_per_resource(units: Units, have: dict[str, float], beside: Optional[Units], beside_count: int) -> list[int]:
    """For each resource one of `units` asks for, how many the totals `have` hold beside
    `beside_count` of `beside`."""
    room = dict(have)
    for name, need in (beside.bundle() if beside else {}).items():
        room[name] = room.get(name, 0.0) - beside_count * need
    return [math.floor(room.get(name, 0.0) / need + 1e-9) for name, need in units.bundle().items() if need > 0]


def pool_size(units: Units, placement: Placement, unit_knobs: str, beside: Optional[Units] = None) -> int:
    """How many units of a pool to start. A pool takes work as its units start, so it does not
    need them all at once: joined to a cluster every one is asked for (those the cluster cannot
    place yet wait for the autoscaler). A private local instance never grows: it starts the
    units its totals hold (beside one `beside`), logging when that is fewer than asked, and
    raises NotEnoughResourcesError naming `unit_knobs` when it cannot hold a single one."""
    import ray

    if placement.joined:
        return units.count or 1
    have = ray.cluster_resources()
    fit = units_that_fit(units, have, beside)
    if fit == 0:
        besides = f" beside one {beside.kind} ({beside.each()})" if beside else ""
        raise NotEnoughResourcesError(
            f"{placement.stage}: one {units.kind} asks for {units.each()} ({unit_knobs}) but this local Ray instance "
            f"has {_cluster_has(have)}{besides}: no {units.kind} could ever start")
    if fit < (units.count or 1):
        placement.log(f"this local Ray instance holds {fit} of the {units.count} {units.kind}s ({units.knob})"
                      + (f" beside one {beside.kind}" if beside else "") + f": starting {fit}")
    return fit


def at_once_beside_pool(units: Units, placement: Placement, pool: Units, pool_workers: int) -> Optional[int]:
    """How many of `units` may run at once beside a pool of `pool_workers` started workers (the
    sweep's trials beside its sampler pool); None: no cap. Joined to a cluster: units.count (the
    autoscaler adds nodes for what waits). A private local instance never grows, so the units may
    only use what the started workers leave free: a worker that dies is replaced on the resources
    it freed, and a unit started on them meanwhile would leave the replacement waiting for ever."""
    import ray

    if placement.joined:
        return units.count
    fits = _fits_per_resource(units, ray.cluster_resources(), pool, pool_workers)
    if not fits:
        return units.count
    return max(1, min(fits if units.count is None else [units.count, *fits]))


def wait_until_placeable(units: Units, placement: Placement) -> float:
    """Return once every unit can be placed at the same time; the seconds waited.

    On a private local instance this checks the totals and raises NotEnoughResourcesError at
    once. Joined to a cluster it reserves the units as one placement group (PACK, as Ray Train
    places its workers), waits until the group is ready, and releases it for the stage to take;
    after `placement.wait_timeout_s` it raises NotEnoughResourcesError naming what was missing."""
    import ray

    refuse_if_never_placeable(units, placement)
    if units.count == 0 or not placement.joined:
        return 0.0

    from ray.util.placement_group import placement_group, remove_placement_group

    started = time.monotonic()
    group = placement_group([units.bundle()] * (units.count or 1), strategy="PACK")
    ready = group.ready()
    try:
        if ray.wait([ready], timeout=1.0)[0]:
            return time.monotonic() - started
        while True:
            waited = time.monotonic() - started
            left = placement.wait_timeout_s - waited
            if left <= 0:
                raise NotEnoughResourcesError(
                    f"{placement.stage}: waited {waited:.0f} s (cluster.wait_timeout_s) for {units.describe()}; the "
                    f"cluster has {_cluster_has(ray.cluster_resources())}. Check that the autoscaler has a node type "
                    f"that offers {units.each()} and room to add it (max_workers), or raise cluster.wait_timeout_s")
            have = _cluster_has(ray.cluster_resources())
            placement.log(f"waiting for the cluster to place {units.describe()}: it has {have} now "
                          f"({waited:.0f} s of {placement.wait_timeout_s:g} s)")
            if ray.wait([ready], timeout=min(placement.log_interval_s, left))[0]:
                waited = time.monotonic() - started
                placement.log(f"placed after {waited:.0f} s")
                return waited
    finally:
        remove_placement_group(group)


# ----------------------------------------------------------------------------------------------
# Where a unit ran (provenance: stage outputs and MLflow record it)

NODE_GROUP_LABEL = "ray.io/node-group"  # Ray labels a node with its autoscaler node type (RAY_NODE_TYPE_NAME)
HEAD_RESOURCE = "node:__internal_head__"


def node_type_of(node: dict[str, Any]) -> str:
    """The node type of a `ray.nodes()` entry: the autoscaler's name for it, which Ray puts in the
    node's labels where the autoscaler starts it (`ray up`, KubeRay, the fake multi-node provider);
    "head" or "worker" on a node without it (a local instance, a hand-started node)."""
    labels = node.get("Labels") or {}
    if labels.get(NODE_GROUP_LABEL):
        return labels[NODE_GROUP_LABEL]
    return "head" if HEAD_RESOURCE in (node.get("Resources") or {}) else "worker"


def this_node() -> dict[str, str]:
    """Called inside a unit: the Ray node it runs on, {"node_id", "node_type"} (unit_location's, with
    "head"/"worker" where no autoscaler named the node); empty strings outside Ray."""
    where = unit_location()
    if not where["node_id"] or where["node_type"]:
        return {"node_id": where["node_id"], "node_type": where["node_type"]}
    import ray

    entry = next((n for n in ray.nodes() if n.get("NodeID") == where["node_id"]), {})
    return {"node_id": where["node_id"], "node_type": node_type_of(entry)}


def node_tags(units: list[dict[str, Any]], prefix: str = "") -> dict[str, str]:
    """MLflow tags naming the distinct nodes and node types a stage's units (records with
    node_id and node_type) ran on, comma-separated."""
    def distinct(key: str) -> str:
        return ",".join(sorted({str(u.get(key, "")) for u in units} - {""}))

    return {f"{prefix}node_ids": distinct("node_id"), f"{prefix}node_types": distinct("node_type")}


# ----------------------------------------------------------------------------------------------
# Devices


def _node_description() -> str:
    import ray

    context = ray.get_runtime_context()
    return f"node {context.get_node_id()} ({ray.util.get_node_ip_address()}, host {socket.gethostname()})"


def _cuda_report() -> dict[str, Any]:
    """Runs inside a unit: what torch sees of the GPU Ray assigned."""
    import ray
    import torch

    return {"node": _node_description(), "cuda": torch.cuda.is_available(),
            "devices": torch.cuda.device_count() if torch.cuda.is_available() else 0,
            "gpu_ids": [str(i) for i in ray.get_gpu_ids()],
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
            "torch": torch.__version__, "torch_cuda": torch.version.cuda}


def unit_location() -> dict[str, Any]:
    """Where the calling unit of work runs (recorded with its output, so a cluster test can check
    where work ran): the Ray node id and IP, the node type (the autoscaler's node group label,
    which it sets from RAY_NODE_TYPE_NAME; "" on a node it did not start), the accelerator type,
    the resources Ray assigned to the unit, and the host. Empty values outside Ray."""
    where = {"node_id": "", "node_ip": "", "node_type": os.environ.get("RAY_NODE_TYPE_NAME", ""),
             "accelerator": "", "resources": {}, "host": socket.gethostname()}
    try:
        import ray

        if not ray.is_initialized():
            return where
        context = ray.get_runtime_context()
        labels = context.get_node_labels() or {}
        where.update(node_id=context.get_node_id(), node_ip=ray.util.get_node_ip_address(),
                     node_type=labels.get("ray.io/node-group") or where["node_type"],
                     accelerator=labels.get("ray.io/accelerator-type", ""))
        try:
            where["resources"] = {k: float(v) for k, v in context.get_assigned_resources().items()}
        except Exception:  # noqa: BLE001 - the driver has no assigned resources
            pass
    except Exception:  # noqa: BLE001 - provenance only
        pass
    return where


def no_cuda_message(stage: str, report: dict[str, Any]) -> str:
    return (f"{stage}: Ray gave this unit GPU {','.join(report['gpu_ids']) or '?'} on {report['node']}, but torch "
            f"{report['torch']} sees no CUDA device there (torch built with CUDA {report['torch_cuda']}, "
            f"CUDA_VISIBLE_DEVICES={report['cuda_visible_devices']!r}). Install a CUDA build of torch and the NVIDIA "
            "driver on the GPU nodes, or set cluster.require_cuda: false to compute on CPU (simulated clusters)")


def check_cuda(units: Units, placement: Placement) -> bool:
    """Before a stage starts GPU units: run one probe with a unit's resources and ask torch
    whether CUDA is there. True: the units compute on CUDA. False (only with require_cuda
    false, after a warning): they compute on CPU. Raises NoCudaError otherwise."""
    if not units.gpus:
        return False
    import ray

    probe = ray.remote(num_cpus=units.cpus, num_gpus=units.gpus, max_retries=0)(_cuda_report)
    report = ray.get(probe.remote())
    if report["cuda"]:
        return True
    message = no_cuda_message(placement.stage, report)
    if placement.require_cuda:
        raise NoCudaError(message)
    placement.log(f"warning: {message.split('. Install')[0]}; cluster.require_cuda is false: computing on CPU")
    return False


def unit_device(stage: str, use_gpu: bool, require_cuda: bool,
                cuda_device: Optional[Callable[[], Any]] = None):
    """The torch device of a unit, called inside it. `cuda_device` picks among the node's GPUs
    (Ray Train: ray.train.torch.get_device); default the first one Ray made visible."""
    import torch

    if not use_gpu:
        return torch.device("cpu")
    if torch.cuda.is_available():
        return cuda_device() if cuda_device is not None else torch.device("cuda", 0)
    message = no_cuda_message(stage, _cuda_report())
    if require_cuda:
        raise NoCudaError(message)
    logger.warning("%s; cluster.require_cuda is false: computing on CPU", message.split(". Install")[0])
    return torch.device("cpu")
