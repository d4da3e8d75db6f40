"""The sweep's search space and its multi-fidelity selection, as plain data (no Ray).

A configuration is a pipeline.generation.SamplerConfig: guidance kind and strength (from
`sweep.guidance`, kind -> strengths), guidance interval, PAG layers, sampler, steps, eta,
p_uncond of the trained model to use, class distribution, seed, precision and net batch.
Training-time settings (p_uncond) only select among the cached trainings.

A guided configuration with strength 0 is the plain conditional model, so it is folded into
guidance "none" (one trial instead of one per guidance kind; SamplerConfig does the folding);
the leaderboard's trade-off curves draw it as w = 0 of every kind.

The full round (select_full_round) re-evaluates, per guidance kind, the screened configurations
not clearly worse than the kind's best: those whose 95% interval of the ranking metric overlaps
the best's (pipeline.metrics.intervals.not_clearly_worse), best first; `sweep.top_k` caps how
many of them (null: every one). The ranking metric is the leaderboard's
(pipeline.leaderboard.columns.RANKING_METRICS: FID when the screening rows have it, i.e. the
Inception weights are there, else fd_evalnet).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional

from pipeline.diffusion.guidance import UNCONDITIONAL, guidance_kind
from pipeline.generation.sampler_config import SamplerConfig, resolve_net_batch, resolve_precision
from pipeline.leaderboard.columns import RANKING_METRICS, ci_columns, lower_is_better, ranking_metric
from pipeline.metrics.intervals import not_clearly_worse


def trial_device_type(sweep) -> str:
    """The device type the sweep's sampler actors sample on (what a null sweep.net_batch is resolved for)."""
    return "cuda" if sweep.use_gpu else "cpu"


def configurations(sweep, train_p_uncond: Iterable[float]) -> list[SamplerConfig]:
    """Every distinct configuration of the `sweep` section, in the order of its settings."""
    p_values = list(sweep.p_uncond) if sweep.p_uncond is not None else list(train_p_uncond)
    net_batch = resolve_net_batch(sweep.net_batch, trial_device_type(sweep))
    precision = resolve_precision(sweep.precision, trial_device_type(sweep))
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
                seed=sweep.seed, precision=precision, net_batch=net_batch)
            seen.setdefault(config.id, config)
    return list(seen.values())


def _value(row: Mapping[str, Any], name: str) -> float:
    value = row.get(name)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number


def selection_metric(results: list[dict[str, Any]]) -> str:
    """The metric the leaderboard ranks the screening rows by (FID, else fd_evalnet)."""
    metric = ranking_metric(name for name in RANKING_METRICS if any(not math.isnan(_value(r, name)) for r in results))
    if metric is None:
        raise ValueError(f"no screening result has {' or '.join(reversed(RANKING_METRICS))}")
    return metric


@dataclass(frozen=True)
class KindSelection:
    """One guidance kind's part of the full round."""
    kind: str
    screened: int                   # configurations of the kind with a value of the metric
    not_clearly_worse: list[str]    # their config ids whose interval overlaps the best's, best first
    chosen: list[str]               # the first top_k of those (all of them without a cap)

    @property
    def capped(self) -> int:
        """Not clearly worse, yet left out by sweep.top_k."""
        return len(self.not_clearly_worse) - len(self.chosen)


@dataclass(frozen=True)
class FullRoundSelection:
    metric: str
    top_k: Optional[int]            # None: no cap
    kinds: list[KindSelection]

    @property
    def config_ids(self) -> list[str]:
        return [cid for kind in self.kinds for cid in kind.chosen]

    def describe(self, names: Mapping[str, str]) -> str:
        """One line for the log: what each kind keeps, and what the cap left out."""
        parts = []
        for k in self.kinds:
            text = f"{k.kind}: {', '.join(names.get(c, c) for c in k.chosen)}"
            if k.capped:
                text += f" ({k.capped} more not clearly worse, over sweep.top_k = {self.top_k})"
            parts.append(text + f" [{len(k.not_clearly_worse)} of {k.screened} overlap the best]")
        cap = f", at most {self.top_k}" if self.top_k is not None else ""
        return (f"by {self.metric}, per guidance kind the configurations whose 95% interval overlaps the best's{cap}: "
                + "; ".join(parts))


def select_full_round(results: list[dict[str, Any]], top_k: Optional[int] = None) -> FullRoundSelection:
    """Per guidance kind (in first-seen order), the screened configurations not clearly worse
    than the kind's best by the leaderboard's ranking metric (their 95% intervals overlap; a row
    without an interval is never called worse), best first (ties by id); all of them, or at most
    `top_k`: the cap bounds the full round's cost when the screening intervals are wide."""
    if top_k is not None and top_k < 1:
        raise ValueError(f"sweep.top_k must be at least 1, got {top_k}")
    if not results:
        return FullRoundSelection("", top_k, [])
    metric = selection_metric(results)
    low, high = ci_columns(metric)
    by_kind: dict[str, list[Mapping[str, Any]]] = {}
    for r in results:
        if not math.isnan(_value(r, metric)):
            by_kind.setdefault(r["guidance"], []).append(r)
    kinds = []
    sign = 1.0 if lower_is_better(metric) else -1.0
    for kind, rows in by_kind.items():
        rows = sorted(rows, key=lambda r: (sign * _value(r, metric), r["config_id"]))
        keep = not_clearly_worse([_value(r, metric) for r in rows], [_value(r, low) for r in rows],
                                 [_value(r, high) for r in rows], lower_is_better(metric))
        kept = [r["config_id"] for r, ok in zip(rows, keep) if ok]
        kinds.append(KindSelection(kind, len(rows), kept, kept if top_k is None else kept[:top_k]))
    return FullRoundSelection(metric, top_k, kinds)


def select_top_k(results: list[dict[str, Any]], k: Optional[int]) -> list[str]:
    """The config ids of select_full_round(results, k), kinds in first-seen order, best first."""
    return select_full_round(results, k).config_ids
