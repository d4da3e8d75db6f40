"""The sweep's search space and its multi-fidelity selection, as plain data (no Ray).

A configuration is a pipeline.generation.SamplerConfig: guidance kind and strength (from
`sweep.guidance`, kind -> strengths), guidance interval, PAG layers, sampler, steps, eta,
p_uncond of the trained model to use, class distribution, seed, precision and net batch.
Training-time settings (p_uncond) only select among the cached trainings.

A guided configuration with strength 0 is the plain conditional model, so it is folded into
guidance "none" (one trial instead of one per guidance kind; SamplerConfig does the folding);
the leaderboard's trade-off curves draw it as w = 0 of every kind.
"""
from __future__ import annotations

import itertools
from typing import Any, Iterable

from pipeline.diffusion.guidance import UNCONDITIONAL, guidance_kind
from pipeline.generation.sampler_config import SamplerConfig, resolve_net_batch

SELECT_METRIC = "fd_evalnet"  # the screening round's ranking (lower is better); FID when evalnet is absent
FALLBACK_METRICS = ("fid",)


def trial_device_type(sweep) -> str:
    """The device type the sweep's sampler actors sample on (what a null sweep.net_batch is resolved for)."""
    return "cuda" if sweep.use_gpu else "cpu"


def configurations(sweep, train_p_uncond: Iterable[float]) -> list[SamplerConfig]:
    """Every distinct configuration of the `sweep` section, in the order of its settings."""
    p_values = list(sweep.p_uncond) if sweep.p_uncond is not None else list(train_p_uncond)
    net_batch = resolve_net_batch(sweep.net_batch, trial_device_type(sweep))
    seen: dict[str, SamplerConfig] = {}
    for kind, strengths in sweep.guidance.items():
        needs_unconditional = UNCONDITIONAL in guidance_kind(kind).needs
        for strength, interval, layers, p, sampler, steps in itertools.product(
                strengths, sweep.guidance_interval, sweep.pag_layers, p_values, sweep.samplers, sweep.steps):
            if needs_unconditional and p == 0 and strength:
                continue  # no unconditional branch to guide with
            config = SamplerConfig(
                guidance=kind, strength=strength, guidance_interval=interval, pag_layers=layers, sampler=sampler,
                steps=steps, eta=sweep.eta if sampler == "ddim" else 0.0, p_uncond=p, class_dist=sweep.class_dist,
                seed=sweep.seed, precision=sweep.precision, net_batch=net_batch)
            seen.setdefault(config.id, config)
    return list(seen.values())


def selection_metric(results: list[dict[str, Any]]) -> str:
    for name in (SELECT_METRIC, *FALLBACK_METRICS):
        if any(r.get(name) is not None for r in results):
            return name
    raise ValueError(f"no screening result has {SELECT_METRIC} or {', '.join(FALLBACK_METRICS)}")


def select_top_k(results: list[dict[str, Any]], k: int) -> list[str]:
    """The config ids of the `k` best screened configurations of each guidance kind (lowest
    fd_evalnet), in a deterministic order: kinds in first-seen order, best first, ties by id."""
    if not results:
        return []
    metric = selection_metric(results)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        if r.get(metric) is not None:
            by_kind.setdefault(r["guidance"], []).append(r)
    chosen = []
    for rows in by_kind.values():
        rows.sort(key=lambda r: (float(r[metric]), r["config_id"]))
        chosen += [r["config_id"] for r in rows[:k]]
    return chosen
