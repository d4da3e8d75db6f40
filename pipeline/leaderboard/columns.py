"""The leaderboard's vocabulary: which columns describe a configuration, which are metrics, in
what order they are shown, and which way each metric is better."""
from __future__ import annotations

import pandas as pd

# What describes a configuration, in display order (metrics follow).
CONFIG_COLUMNS = ("guidance", "w", "s", "guidance_interval", "pag_layers", "p_uncond", "sampler", "steps",
                  "precision", "nfe", "images_per_s", "num_images")
# Shown only where some row has a value (most configurations leave them empty).
SPARSE_COLUMNS = ("guidance_interval", "pag_layers")
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


def lower_is_better(metric: str) -> bool:
    """FD/FID and KID are distances; IS, precision, recall and accuracy are better high."""
    return metric.startswith(("fd_", "fid", "kid"))


def metric_columns(df: pd.DataFrame) -> list[str]:
    numeric = [c for c in df.columns if c not in NON_METRICS and pd.api.types.is_numeric_dtype(df[c])]
    first = [m for m in METRIC_ORDER if m in numeric]
    return first + sorted(c for c in numeric if c not in first)


def display_columns(df: pd.DataFrame) -> list[str]:
    """The table's columns: rank, the configuration, every metric (spreads like is_std stay in the parquet)."""
    cols = ["rank"] + [c for c in CONFIG_COLUMNS if c in df.columns
                       and (c not in SPARSE_COLUMNS or df[c].map(_has_value).any())]
    return cols + [m for m in metric_columns(df) if df[m].notna().any() and not m.endswith("_std")]


def _has_value(value) -> bool:
    if value is None or value is pd.NA:
        return False
    return not (isinstance(value, float) and value != value)
