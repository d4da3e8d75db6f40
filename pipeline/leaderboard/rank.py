"""Ranking: evaluated configurations ordered within each (dataset, protocol) table.

Two numbers are ranked together only when their dataset and protocol (feature extractor, number
of samples, reference statistics, seed range) match; every (dataset, protocol) pair is its own
table. Reproduced tables come before reported ones, larger N first.

Within a table, rows whose 95% interval of the ranking metric overlaps the best row's share rank 1,
and any other row is ranked 1 + the number of rows whose interval lies wholly on its better side
(pipeline.metrics.intervals.shared_ranks), so a rank separates only configurations whose
difference is outside sampling noise. A table without intervals (published rows) ranks by value,
equal values sharing a rank.
"""
from __future__ import annotations

import math
from typing import Iterable, Optional

import pandas as pd

from pipeline.leaderboard.columns import (ci_columns, has_intervals, lower_is_better, metric_columns,
                                          ranking_metric)
from pipeline.metrics.intervals import shared_ranks


def default_metric(df: pd.DataFrame) -> Optional[str]:
    """FID when the group has it (the comparable number), else the offline fd_evalnet
    (columns.RANKING_METRICS); else the first metric with a value."""
    metrics = [m for m in metric_columns(df) if df[m].notna().any()]
    return ranking_metric(metrics) or (metrics[0] if metrics else None)


def _numbers(column: pd.Series):
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype=float, na_value=math.nan)


def _ranks(g: pd.DataFrame, by: str) -> list:
    """Shared ranks by the interval of `by` where the table has intervals, else competition ranks
    by value; NA where the row has no value."""
    if has_intervals(g, by):
        low, high = ci_columns(by)
        ranks = shared_ranks(_numbers(g[by]), _numbers(g[low]), _numbers(g[high]), lower_is_better(by))
        return [pd.NA if r == 0 else int(r) for r in ranks]
    ranks = g[by].rank(method="min", ascending=lower_is_better(by))
    return [pd.NA if math.isnan(r) else int(r) for r in ranks]


def _group_order(df: pd.DataFrame) -> list[tuple[str, str]]:
    """Reproduced groups first, the largest N first; reported groups last."""
    keys = []
    for (dataset, protocol), g in df.groupby(["dataset", "protocol"], sort=False, dropna=False):
        reported = (g.get("source", pd.Series(["reproduced"])) == "reported").all()
        n = pd.to_numeric(g.get("num_images"), errors="coerce").max() if "num_images" in g else 0
        keys.append((bool(reported), str(dataset), -(0 if pd.isna(n) else n), str(protocol), (dataset, protocol)))
    return [k[-1] for k in sorted(keys)]


def rank(rows: pd.DataFrame | Iterable[dict], metric: Optional[str] = None) -> pd.DataFrame:
    """Rows ranked within each (dataset, protocol) group by `metric` (default: FID, else fd_evalnet).

    Adds `rank` (1 = best; rows whose interval overlaps the best's share it; empty where the
    metric is missing) and `ranked_by`; within a group rows are in rank order, then by value;
    groups come one after another: reproduced before reported, larger N first.
    """
    df = pd.DataFrame(rows).copy() if not isinstance(rows, pd.DataFrame) else rows.copy()
    if df.empty:
        return df.assign(rank=pd.Series(dtype="Int64"), ranked_by=pd.Series(dtype=str))
    for column, fill in (("dataset", "unknown"), ("protocol", "unknown"), ("source", "reproduced")):
        if column not in df:
            df[column] = fill
        df[column] = df[column].fillna(fill)
    parts = []
    for key in _group_order(df):
        g = df[(df["dataset"] == key[0]) & (df["protocol"] == key[1])].copy()
        by = metric if metric is not None else default_metric(g)
        if by is None or by not in g or not g[by].notna().any():
            g["rank"] = pd.array([pd.NA] * len(g), dtype="Int64")
            g["ranked_by"] = ""
            parts.append(g)
            continue
        g = g.sort_values(by, ascending=lower_is_better(by), na_position="last", kind="mergesort")
        g["rank"] = pd.array(_ranks(g, by), dtype="Int64")
        g = g.sort_values("rank", na_position="last", kind="mergesort")  # stable: by value within a rank
        g["ranked_by"] = by
        parts.append(g)
    return pd.concat(parts, ignore_index=True)


def groups(ranked: pd.DataFrame) -> list[tuple[tuple[str, str], pd.DataFrame]]:
    """The ranked frame split into its (dataset, protocol) tables, in order."""
    if ranked.empty:
        return []
    seen, out = set(), []
    for dataset, protocol in zip(ranked["dataset"], ranked["protocol"]):
        if (dataset, protocol) in seen:
            continue
        seen.add((dataset, protocol))
        out.append(((dataset, protocol), ranked[(ranked["dataset"] == dataset) & (ranked["protocol"] == protocol)]))
    return out
