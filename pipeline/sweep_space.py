"""The sweep's search space and its multi-fidelity selection, as plain data (no Ray, no torch).

A configuration is a dict of sampler settings (guidance kind, strength, sampler, steps, eta,
p_uncond of the trained model to use, class distribution, seed) with a stable `config_id`.
Training-time settings (p_uncond) only select among the cached trainings.

A guided configuration with strength 0 is the plain conditional model, so it is folded into
guidance "none" (one trial instead of one per guidance kind); the leaderboard's trade-off
curves draw it as w = 0 of every kind.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable

STRENGTH_KEYS = {"cfg": "w", "classifier": "classifier_scale", "autoguidance": "autoguidance_w", "pag": "pag_w"}
SELECT_METRIC = "fd_evalnet"  # the screening round's ranking (lower is better); FID when evalnet is absent
FALLBACK_METRICS = ("fid",)


def config_id(config: dict[str, Any]) -> str:
    text = json.dumps({k: config[k] for k in sorted(config) if k not in ("config_id", "name")}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def config_name(c: dict[str, Any]) -> str:
    """A short readable id: cfg_w1-ddim25-p0.1."""
    strength = {"none": "", "classifier": f"_s{c['strength']:g}"}.get(c["guidance"], f"_w{c['strength']:g}")
    eta = f"-eta{c['eta']:g}" if c["sampler"] == "ddim" and c["eta"] else ""
    precision = f"-{c['precision']}" if c.get("precision", "fp32") != "fp32" else ""
    return f"{c['guidance']}{strength}-{c['sampler']}{c['steps']}{eta}-p{c['p_uncond']:g}{precision}"


def empty_axes(sweep) -> list[str]:
    """The sweep's lists that would silently drop what it asks for: a guidance kind listed with no
    strength to try, or an empty subset of models."""
    problems = [f"sweep.{STRENGTH_KEYS[kind]} = []: sweep.guidance lists {kind}, which then has nothing to try"
                for kind in dict.fromkeys(sweep.guidance) if kind != "none" and not getattr(sweep, STRENGTH_KEYS[kind])]
    if sweep.p_uncond is not None and not sweep.p_uncond:
        problems.append("sweep.p_uncond = []: no model to sweep (null sweeps every trained model)")
    return problems


def configurations(sweep, train_p_uncond: Iterable[float]) -> list[dict[str, Any]]:
    """Every distinct configuration of the `sweep` section."""
    p_values = list(sweep.p_uncond) if sweep.p_uncond is not None else list(train_p_uncond)
    seen: dict[str, dict[str, Any]] = {}
    for guidance in sweep.guidance:
        strengths = [0.0] if guidance == "none" else list(getattr(sweep, STRENGTH_KEYS[guidance]))
        for strength in strengths:
            kind = "none" if strength == 0 else guidance
            for p in p_values:
                if kind == "cfg" and p == 0:
                    continue  # no unconditional model to guide with
                for sampler in sweep.samplers:
                    for steps in sweep.steps:
                        c = {"guidance": kind, "strength": float(strength if kind != "none" else 0.0),
                             "sampler": sampler, "steps": int(steps),
                             "eta": float(sweep.eta) if sampler == "ddim" else 0.0,
                             "p_uncond": float(p), "class_dist": sweep.class_dist, "seed": int(sweep.seed)}
                        if sweep.precision != "fp32":  # absent for fp32: earlier sweeps' ids stay valid
                            c["precision"] = sweep.precision
                        c["config_id"] = config_id(c)
                        c["name"] = config_name(c)
                        seen.setdefault(c["config_id"], c)
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
