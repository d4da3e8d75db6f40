"""The leaderboard's vocabulary: which columns describe a configuration, which are metrics, in
what order they are shown, which way each metric is better, where a metric's 95% interval is
kept, and which metric a table is ranked by."""
from __future__ import annotations

from typing import Iterable, Optional

import pandas as pd

# What describes a configuration, in display order (metrics follow). `model` names a published
# row's model (baselines, EDM2); the sweep's own rows leave it empty.
CONFIG_COLUMNS = ("model", "guidance", "w", "s", "guidance_interval", "pag_layers", "p_uncond", "sampler", "steps",
                  "precision", "nfe", "images_per_s", "num_images")
HEADERS = {"num_images": "N", "nfe": "NFE/img", "images_per_s": "img/s", "precision": "dtype",
           "guidance_interval": "interval", "pag_layers": "PAG layers"}
# Metrics shown first when present, then any other metric in alphabetical order.
METRIC_ORDER = ("fid", "is", "fd_evalnet", "is_evalnet", "precision_evalnet", "recall_evalnet", "class_accuracy",
                "precision_inception", "recall_inception", "kid_mean", "kid_evalnet_mean")
NON_METRICS = frozenset(CONFIG_COLUMNS) | {
    "rank", "dataset", "protocol", "protocol_json", "source", "citation", "config_id", "name", "fidelity", "eta",
    "class_dist", "seed", "grid", "strength", "seconds", "round", "interval", "generated", "generate_seconds",
    "mlflow_run_id", "notes", "ranked_by", "node_id", "net_batch", "device"}
SOURCES = ("reproduced", "reported")
# The table's ranking metric, in order of preference: FID (clean-fid's Inception, the number papers
# compare) when the table has it, else the offline evaluation network's Frechet distance. The
# sweep's full round is chosen by the same rule (pipeline.sweep_space).
RANKING_METRICS = ("fid", "fd_evalnet")
CI_SIDES = ("low", "high")  # <metric>_ci_low / <metric>_ci_high: the metric's 95% interval


def lower_is_better(metric: str) -> bool:
    """FD/FID, sFID and KID are distances; IS, precision, recall and accuracy are better high."""
    return metric.startswith(("fd_", "fid", "sfid", "kid"))


def ci_columns(metric: str) -> tuple[str, str]:
    """The columns holding `metric`'s interval (pipeline.generation.scoring writes them)."""
    return f"{metric}_ci_low", f"{metric}_ci_high"


def is_ci_column(column: str) -> bool:
    return column.endswith(tuple(f"_ci_{side}" for side in CI_SIDES))


def has_intervals(df: pd.DataFrame, metric: str) -> bool:
    """Whether some row of `df` has both ends of `metric`'s interval."""
    low, high = ci_columns(metric)
    return low in df and high in df and bool((df[low].notna() & df[high].notna()).any())


def ranking_metric(available: Iterable[str]) -> Optional[str]:
    """The first of RANKING_METRICS among `available` (the metrics that have values), or None."""
    names = set(available)
    return next((m for m in RANKING_METRICS if m in names), None)


def metric_columns(df: pd.DataFrame) -> list[str]:
    """The metric columns (numeric, not configuration; intervals are not metrics of their own)."""
    numeric = [c for c in df.columns if c not in NON_METRICS and not is_ci_column(c)
               and pd.api.types.is_numeric_dtype(df[c])]
    first = [m for m in METRIC_ORDER if m in numeric]
    return first + sorted(c for c in numeric if c not in first)


def display_columns(df: pd.DataFrame) -> list[str]:
    """The table's columns: rank; the configuration, each column where some row has a value (most
    configurations leave the guidance interval empty, published rows the sampler's throughput);
    every metric (spreads like is_std and the intervals' own columns stay in the parquet: the
    writers show an interval beside its metric); for published rows their notes (conventions
    such as the paper's own w)."""
    cols = ["rank"] + [c for c in CONFIG_COLUMNS if c in df.columns and df[c].map(_has_value).any()]
    cols += [m for m in metric_columns(df) if df[m].notna().any() and not m.endswith("_std")]
    reported = "source" in df and (df["source"] == "reported").all()
    return cols + (["notes"] if reported and "notes" in df and df["notes"].map(_has_text).any() else [])


def _has_text(value) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _has_value(value) -> bool:
    if value is None or value is pd.NA:
        return False
    return not (isinstance(value, float) and value != value)
