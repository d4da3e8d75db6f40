"""What work costs on the cluster: throughput, the cluster's size, and the printed plan."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from pipeline.capacity.work import FEATURES, SAMPLE, TRAIN, BACKWARD_FACTOR, Networks, Part, Work
from pipeline.resources import Units

# Function-local imports: they bring in torch, which importing this module does not need.


class CapacityError(ValueError):
    """The plan cannot be made (a throughput record that is missing or incomplete)."""


def _precision_class(precision: str) -> str:
    return "bf16" if precision in ("bf16", "fp16") else "fp32"


@dataclass(frozen=True)
class Throughput:
    """Effective TFLOP/s of one GPU by (kind of work, "fp32" | "bf16"), of one CPU core, and
    where they come from (printed)."""

    source: str
    gpu: dict[tuple[str, str], float]
    cpu: float

    def per_gpu(self, kind: str, precision: str) -> float:
        return self.gpu[(kind, _precision_class(precision))]

    @classmethod
    def of(cls, capacity, nets: Networks) -> "Throughput":
        """From `cluster.capacity`: the record its `bench` names, else its stated rates."""
        if capacity.bench:
            return cls.measured(capacity.bench, capacity.cpu_tflops, nets)
        rates = {"bf16": capacity.gpu_tflops_bf16, "fp32": capacity.gpu_tflops_fp32}
        return cls(f"stated in the config (cluster.capacity): one GPU {rates['bf16']:g} TFLOP/s in bf16, "
                   f"{rates['fp32']:g} in fp32; one CPU core {capacity.cpu_tflops:g}",
                   {(kind, p): rate for kind in (TRAIN, SAMPLE, FEATURES) for p, rate in rates.items()},
                   capacity.cpu_tflops)

    @classmethod
    def measured(cls, path: str, cpu_tflops: float, nets: Networks) -> "Throughput":
        """From a device record of `python -m pipeline.bench gpu` (pipeline.benches.gpu): training's
        images/s of the ADM-64 UNet times its FLOPs, sampling's achieved TFLOP/s, and Inception's
        images/s times its FLOPs (fp32 sampling's rate where it was not measured)."""
        try:
            record = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise CapacityError(f"cluster.capacity.bench = {path!r}: cannot read it: {exc}") from None
        if not isinstance(record, dict) or "skipped" in record:
            raise CapacityError(f"cluster.capacity.bench = {path!r}: measured nothing"
                                + (f" ({record['skipped']})" if isinstance(record, dict) else ""))

        def figure(key: str) -> float:
            value = record.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise CapacityError(f"cluster.capacity.bench = {path!r}: no positive {key!r} in it (the record of "
                                    "`python -m pipeline.bench gpu --out FILE` has one)")
            return float(value)

        gpu = {}
        for p in ("fp32", "bf16"):
            train_flops = BACKWARD_FACTOR * figure("unet_forward_gflops_per_image") * 1e9
            gpu[(TRAIN, p)] = figure(f"train_images_per_s_{p}") * train_flops / 1e12
            gpu[(SAMPLE, p)] = figure(f"sample_tflops_{p}")
        inception = record.get("inception_images_per_s")
        gpu[(FEATURES, "fp32")] = gpu[(FEATURES, "bf16")] = (
            figure("inception_images_per_s") * nets.inception.gflops / 1e3 if inception else gpu[(SAMPLE, "fp32")])
        rates = (f"trains at {gpu[(TRAIN, 'bf16')]:.4g} TFLOP/s in bf16 ({gpu[(TRAIN, 'fp32')]:.4g} fp32), samples at "
                 f"{gpu[(SAMPLE, 'bf16')]:.4g} ({gpu[(SAMPLE, 'fp32')]:.4g}), extracts features at "
                 f"{gpu[(FEATURES, 'fp32')]:.4g}" + ("" if inception else " (no Inception figure: fp32 sampling's)"))
        return cls(f"measured on {record.get('device', '?')} by `python -m pipeline.bench gpu` ({path}): one GPU "
                   f"{rates}; one CPU core {cpu_tflops:g} (cluster.capacity.cpu_tflops)", gpu, cpu_tflops)


@dataclass(frozen=True)
class ClusterSize:
    """GPUs and CPU cores the cluster holds at once; None: as many as a stage asks (the autoscaler)."""

    gpus: Optional[int]
    cpus: Optional[int]
    driver_cpus: int  # the driver's torch threads: this machine's cores
    source: str

    @classmethod
    def of(cls, cluster_cfg) -> "ClusterSize":
        from pipeline.cluster import target_address

        capacity, joined = cluster_cfg.capacity, target_address(cluster_cfg) is not None
        gpus, cpus = capacity.gpus, capacity.cpus
        if not joined:  # a private local instance: what Ray will find on this machine
            gpus = gpus if gpus is not None else cluster_cfg.num_gpus if cluster_cfg.num_gpus is not None else _gpus()
            cpus = cpus or cluster_cfg.num_cpus or os.cpu_count() or 1
        stated = capacity.gpus is not None or capacity.cpus is not None
        where = "cluster.capacity" if stated else "a cluster that grows" if joined else "the local Ray instance"
        shown = (f"{gpus} GPUs" if gpus is not None else "as many GPUs as a stage asks",
                 f"{cpus} CPU cores" if cpus is not None else "as many CPU cores as a stage asks")
        return cls(gpus, cpus, os.cpu_count() or 1, f"{', '.join(shown)} ({where})")


def _gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@dataclass(frozen=True)
class Cost:
    flops: float
    device_seconds: float     # GPU-seconds on GPU units, CPU-core-seconds otherwise
    wall_seconds: float
    shortfall: str = ""       # units the cluster cannot hold at once


def compute_units(declared, size: ClusterSize) -> tuple[Units, ...]:
    """A stage's computing units: those holding GPUs if any, else all; the driver if none are declared."""
    units = declared if isinstance(declared, tuple) else (declared,) if declared is not None else ()
    return tuple(u for u in units if u.gpus) or units or (Units("driver process", 1, cpus=float(size.driver_cpus)),)


def at_once(units: Units, part: Part, size: ClusterSize) -> int:
    """How many of `units` work on `part` at once: their count (or one per piece), as the cluster holds."""
    room = [units.count if units.count is not None else (part.pieces or 1)]
    if units.gpus and size.gpus is not None:
        room.append(int(size.gpus // units.gpus))
    if size.cpus is not None:
        room.append(int(size.cpus // units.cpus))
    return min(room)


def cost(part: Part, units: tuple[Units, ...], throughput: Throughput, size: ClusterSize) -> Cost:
    on_gpu = bool(units[0].gpus)
    per_device = throughput.per_gpu(part.kind, part.precision) if on_gpu else throughput.cpu
    rate, shortfall = 0.0, ""
    for u in units:
        n = at_once(u, part, size)
        if n == 0 or (u.count is not None and n < u.count):
            shortfall = f"{u.count or 1} {u.kind}s asked for at once, the cluster holds {n}"
        rate += n * (u.gpus if on_gpu else u.cpus) * per_device
    wall = part.flops / (rate * 1e12) if rate else float("inf")
    return Cost(part.flops, part.flops / (per_device * 1e12), wall, shortfall)


# ----------------------------------------------------------------------------------------------
# The printout


def _g(x: float) -> str:
    """3 significant digits, thousands separated, never an exponent."""
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def count_text(n: Optional[float]) -> str:
    if n is None:
        return "?"
    scale, unit = next(((s, u) for s, u in ((1e9, "G"), (1e6, "M"), (1e3, "k")) if n >= s), (1, ""))
    return f"{_g(n / scale)}{unit}"


def flops_text(flops: float) -> str:
    units = ((1e21, "ZFLOP"), (1e18, "EFLOP"), (1e15, "PFLOP"), (1e12, "TFLOP"), (1e9, "GFLOP"), (1e6, "MFLOP"))
    scale, unit = next(((s, u) for s, u in units if flops >= s), (1, "FLOP"))
    return f"{_g(flops / scale)} {unit}"


def time_text(seconds: float) -> str:
    if seconds == float("inf"):
        return "never"
    if seconds < 0.01:
        return "under 0.01 s"
    scale, unit = next(((s, u) for s, u in ((86400.0, "days"), (3600.0, "h"), (60.0, "min")) if seconds >= s),
                       (1.0, "s"))
    return f"{_g(seconds / scale)} {unit}"


def device_time_text(seconds: float, on_gpu: bool) -> str:
    """`412 GPU-hours`; below an hour `3.2 min of CPU-core time`."""
    noun = "GPU" if on_gpu else "CPU-core"
    return f"{_g(seconds / 3600)} {noun}-hours" if seconds >= 3600 else f"{time_text(seconds)} of {noun} time"


@dataclass(frozen=True)
class Row:
    """An instance of a stage in the plan: its label, whether it runs, its work, its declared units."""

    label: str
    runs: bool
    work: Optional[Work]
    units: Optional[Units | tuple[Units, ...]]


@dataclass(frozen=True)
class Plan:
    lines: list[str]
    flops: float         # of the instances to run
    gpu_hours: float
    cpu_hours: float
    wall_hours: float
    costs: dict[str, list[Cost]]  # per label, per costed part


def plan(rows: Sequence[Row], cluster_cfg, nets: Networks) -> Plan:
    """Cost the rows that run and lay the plan out, one line per instance and one per part."""
    throughput, size = Throughput.of(cluster_cfg.capacity, nets), ClusterSize.of(cluster_cfg)
    width = max(len(r.label) for r in rows)
    indent = " " * (width + 6)
    body, costs = [], {}
    totals = {"flops": 0.0, "gpu": 0.0, "cpu": 0.0, "wall": 0.0}
    for row in rows:
        parts = row.work.parts if row.work else ()
        if not row.runs or not parts:
            body.append(f"  {row.label:<{width}}  " + ("cached: nothing to do" if not row.runs else "no network work"))
            continue
        units = compute_units(row.units, size)
        costed = [p for p in parts if p.flops is not None]
        costs[row.label] = [cost(p, units, throughput, size) for p in costed]
        images = None if any(p.images is None for p in parts) else sum(p.images for p in parts)
        line = f"  {row.label:<{width}}  {count_text(images)} images"
        if costed:
            on_gpu = bool(units[0].gpus)
            flops = sum(c.flops for c in costs[row.label])
            device_s = sum(c.device_seconds for c in costs[row.label])
            wall_s = sum(c.wall_seconds for c in costs[row.label])
            totals["flops"] += flops
            totals["gpu" if on_gpu else "cpu"] += device_s / 3600
            totals["wall"] += wall_s / 3600
            busy = " + ".join(f"{at_once(u, costed[0], size)} x {u.kind} ({u.each()} each)" for u in units)
            line += (f", {count_text(sum(p.passes or 0 for p in costed))} network passes, {flops_text(flops)}: "
                     f"{device_time_text(device_s, on_gpu)}, wall-clock {time_text(wall_s)} on {busy}")
        body.append(line)
        body += [indent + p.what + (f" = {flops_text(p.flops)} ({p.precision})" if p.flops is not None else "")
                 for p in parts]
        body += [f"{indent}! {s}: it waits for the autoscaler" for s in {c.shortfall for c in costs[row.label]} if s]
        body += [f"{indent}({row.work.note})"] if row.work.note else []
    networks = " · ".join(f"{n.name} {n.gflops:.4g}" + (f" ({n.parameters / 1e6:.4g}M parameters)" if n.name == "unet"
                                                          else "") for n in nets.counted)
    spent = " + ".join(device_time_text(totals[d] * 3600, d == "gpu") for d in ("gpu", "cpu") if totals[d])
    lines = ["capacity plan (work from the configured networks, time = work / effective throughput; stages run one "
             "after another):",
             f"  throughput: {throughput.source}",
             f"  cluster: {size.source}",
             f"  GFLOPs per image, counted on the meta device by torch.utils.flop_counter: {networks or 'none'}",
             *body,
             f"  total to run: {flops_text(totals['flops'])}, {spent or 'nothing'}, wall-clock "
             f"{time_text(totals['wall'] * 3600)}"]
    return Plan(lines, totals["flops"], totals["gpu"], totals["cpu"], totals["wall"], costs)
