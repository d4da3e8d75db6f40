"""The leaderboard's writers: Markdown, CSV, parquet and a self-contained HTML page, one table
per (dataset, protocol) in the order ``rank`` left them."""
from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from pipeline.leaderboard.columns import (HEADERS, ci_columns, display_columns, has_intervals, lower_is_better,
                                          metric_columns)
from pipeline.leaderboard.rank import groups
from pipeline.metrics.intervals import LEVEL


def protocol_summary(protocol_json: Any) -> str:
    """A short human description of a protocol: extractors, N, reference set."""
    if not isinstance(protocol_json, str) or not protocol_json.startswith("{"):
        return str(protocol_json)
    proto = json.loads(protocol_json)
    parts = []
    for name, p in sorted(proto.items()) if all(isinstance(v, dict) for v in proto.values()) else [("", proto)]:
        bits = [name or str(p.get("extractor", ""))]
        if "num_samples" in p:
            bits.append(f"N={p['num_samples']}")
        if p.get("reference_stats_id"):
            bits.append(f"ref {str(p['reference_stats_id'])[:8]}")
        parts.append(" ".join(b for b in bits if b))
    return "; ".join(parts)


def _fmt(value: Any, column: str) -> str:
    if isinstance(value, (list, tuple, np.ndarray)):  # a guidance interval
        return "–".join(f"{v:g}" for v in value)
    if _missing(value):
        return ""
    if isinstance(value, float):
        if column in ("w", "s", "p_uncond"):
            return f"{value:g}"
        if column == "images_per_s":
            return f"{value:.1f}"
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _decimals(low: float, high: float) -> Optional[int]:
    """Decimals that show the interval's half-width to two significant digits when they begin
    with 1 to 3.5, else to one (the Particle Data Group's rounding rule), clipped to 0-6."""
    half = (high - low) / 2
    if not (math.isfinite(half) and half > 0):
        return None
    exponent = math.floor(math.log10(half))
    digits = -exponent + (1 if half / 10 ** exponent < 3.55 else 0)
    return min(6, max(0, digits))


def metric_text(row: Any, metric: str) -> tuple[str, str]:
    """(the value, its interval "[low, high]" or "") of `metric` in a row, both rounded to the
    interval's precision (a digit the interval cannot vouch for is not printed)."""
    value = row.get(metric)
    low, high = (row.get(c) for c in ci_columns(metric))
    if _missing(value) or _missing(low) or _missing(high):
        return _fmt(value, metric), ""
    places = _decimals(float(low), float(high))
    if places is None:
        return _fmt(value, metric), f"[{_fmt(float(low), metric)}, {_fmt(float(high), metric)}]"
    return f"{float(value):.{places}f}", f"[{float(low):.{places}f}, {float(high):.{places}f}]"


def _cell(row: Any, column: str, metrics: set[str]) -> str:
    if column not in metrics:
        return _fmt(row.get(column), column)
    value, interval = metric_text(row, column)
    return f"{value} {interval}" if interval else value


def _ci_level(g: pd.DataFrame) -> float:
    """The intervals' level, from the protocol (pipeline.metrics records it), else LEVEL."""
    text = g["protocol_json"].iloc[0] if "protocol_json" in g else None
    if isinstance(text, str) and text.startswith("{"):
        for part in json.loads(text).values():
            if isinstance(part, dict) and isinstance(part.get("ci"), dict) and "level" in part["ci"]:
                return float(part["ci"]["level"])
    return LEVEL


def _reported(g: pd.DataFrame) -> bool:
    return bool((g["source"] == "reported").all())


def _heading(key: tuple[str, str], g: pd.DataFrame) -> str:
    dataset, protocol = key
    by = g["ranked_by"].iloc[0] if "ranked_by" in g else ""
    if _reported(g):
        cites = sorted({str(c) for c in g.get("citation", pd.Series(dtype=str)).dropna()})
        return f"{dataset} · reported · {protocol}" + (f" ({'; '.join(cites)})" if cites else "") + (
            f" · {rank_rule(g)}" if by else "")
    summary = protocol_summary(g["protocol_json"].iloc[0]) if "protocol_json" in g else ""
    return f"{dataset} · protocol {protocol}" + (f" ({summary})" if summary else "") + (
        f" · {rank_rule(g)}" if by else "")


def rank_rule(g: pd.DataFrame) -> str:
    """How the table's rank column was made, for its heading."""
    by = g["ranked_by"].iloc[0] if "ranked_by" in g else ""
    if not by:
        return ""
    rule = f"rank: by {by} ({'lower' if lower_is_better(by) else 'higher'} is better)"
    if has_intervals(g, by):
        return rule + (f", {_ci_level(g):.0%} intervals; rows whose interval overlaps the best's share rank 1, "
                       "any other row is 1 + the number of rows whose interval lies wholly on its better side")
    return rule + "; no intervals, equal values share a rank"


def table_notes(g: pd.DataFrame) -> list[str]:
    """What a reader needs to read the intervals of one table."""
    if _reported(g):
        return ["Published numbers: the papers give no intervals, so none is shown (ranked by value)."]
    metrics = [m for m in display_columns(g) if has_intervals(g, m)]
    if not metrics:
        return []
    notes = [f"Each number is followed by its {_ci_level(g):.0%} interval [low, high] over the sampling noise "
             "of the generated images (pipeline.metrics.intervals); digits are rounded to the interval's precision."]
    if any(m.startswith(("fd_", "fid")) for m in metrics):
        notes.append("FD/FID intervals are bias-corrected (grouped jackknife, FID-infinity style): they bracket "
                     "the distance at N -> infinity and can lie below the N-image number.")
    return notes


def to_markdown(ranked: pd.DataFrame) -> str:
    """One Markdown table per (dataset, protocol); a metric with an interval reads `12.3 [11.8, 12.9]`."""
    if ranked.empty:
        return "_no evaluated configurations_\n"
    lines = []
    for key, g in groups(ranked):
        cols = display_columns(g)
        metrics = set(metric_columns(g))
        lines += [f"### {_heading(key, g)}", ""] + [f"_{note}_" for note in table_notes(g)]
        lines += [""] if table_notes(g) else []
        lines += ["| " + " | ".join(HEADERS.get(c, c) for c in cols) + " |",
                  "| " + " | ".join("---" for _ in cols) + " |"]
        for _, row in g.iterrows():
            lines.append("| " + " | ".join(_cell(row, c, metrics) for c in cols) + " |")
        lines.append("")
    return "\n".join(lines)


def table_columns(ranked: pd.DataFrame) -> list[str]:
    """The columns of the machine-readable table (CSV, MLflow): dataset, protocol, source, the
    displayed columns, and each metric's interval columns right after it."""
    if ranked.empty:
        return []
    cols = ["dataset", "protocol", "source"]
    for c in display_columns(ranked):
        cols += [c] + ([x for x in ci_columns(c) if x in ranked] if c in set(metric_columns(ranked)) else [])
    return cols


def to_csv(ranked: pd.DataFrame) -> str:
    cols = table_columns(ranked)
    return ranked[cols].to_csv(index=False) if cols else ""


def write_parquet(ranked: pd.DataFrame, path: str | Path) -> None:
    ranked.to_parquet(path, index=False)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em;color:#222}
h1{font-size:1.5em} h2{font-size:1.15em;margin-top:2em} h3{font-size:1em;margin-top:1.5em}
.wide{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right;white-space:nowrap}
th{background:#f2f2f2} tr:nth-child(even) td{background:#fafafa}
td.text{text-align:left} .reported td{color:#555;font-style:italic}
td .ci{display:block;font-size:.8em;color:#666} p.note{font-size:.85em;color:#444;margin:.3em 0}
figure{display:inline-block;margin:.5em;vertical-align:top;max-width:100%}
figcaption{font-size:.8em;text-align:center}
figure img{max-width:100%;height:auto} img.grid{image-rendering:pixelated}
"""
GRID_WIDTH_PX = 320  # sample grids are drawn at an integer zoom up to about this width


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _png_size(png: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def _figures(images: dict[str, bytes], grid: bool = False) -> list[str]:
    out = []
    for name, png in images.items():
        width, height = _png_size(png)
        zoom = max(1, min(8, GRID_WIDTH_PX // max(width, 1))) if grid else 1
        cls = " class='grid'" if grid else ""
        out.append(f"<figure><img src='{_data_uri(png)}' alt='{html.escape(name)}' width='{width * zoom}' "
                   f"height='{height * zoom}'{cls}><figcaption>{html.escape(name)}</figcaption></figure>")
    return out


def _html_cell(row: Any, column: str, metrics: set[str]) -> str:
    """A metric's interval goes on a small second line of its cell (the column stays narrow)."""
    text = " class=text" if column in ("model", "guidance", "sampler", "notes") else ""
    if column not in metrics:
        return f"<td{text}>{html.escape(_fmt(row.get(column), column))}</td>"
    value, interval = metric_text(row, column)
    below = f"<span class='ci'>{html.escape(interval)}</span>" if interval else ""
    return f"<td>{html.escape(value)}{below}</td>"


def to_html(ranked: pd.DataFrame, plots: Optional[dict[str, bytes]] = None,
            grids: Optional[dict[str, bytes]] = None, title: str = "Leaderboard",
            plot_sections: Optional[list[tuple[str, dict[str, bytes]]]] = None) -> str:
    """A self-contained page: inline CSS, the tables (each metric's interval under its value),
    plots and sample grids as data URIs.

    `plot_sections` are (heading, plots) in reading order, e.g. one per table; `plots` without a
    heading come first. Wide tables scroll sideways in their own box; figures shrink to the page."""
    esc = html.escape
    out = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
           "<meta name='viewport' content='width=device-width, initial-scale=1'>", f"<title>{esc(title)}</title>",
           f"<style>{_CSS}</style></head><body>", f"<h1>{esc(title)}</h1>"]
    if ranked.empty:
        out.append("<p>No evaluated configurations.</p>")
    for key, g in groups(ranked):
        cols = display_columns(g)
        cls = " class='reported'" if (g["source"] == "reported").all() else ""
        metrics = set(metric_columns(g))
        out += [f"<h2>{esc(_heading(key, g))}</h2>"] + [f"<p class='note'>{esc(n)}</p>" for n in table_notes(g)]
        out += [f"<div class='wide'><table{cls}><thead><tr>"]
        out += [f"<th>{esc(HEADERS.get(c, c))}</th>" for c in cols] + ["</tr></thead><tbody>"]
        for _, row in g.iterrows():
            out.append("<tr>" + "".join(_html_cell(row, c, metrics) for c in cols) + "</tr>")
        out.append("</tbody></table></div>")
    sections = ([("", plots)] if plots else []) + [(h, p) for h, p in plot_sections or [] if p]
    if sections:
        out.append("<h2>Plots</h2>")
        for heading, images in sections:
            out += ([f"<h3>{esc(heading)}</h3>"] if heading else []) + _figures(images)
    if grids:
        out += ["<h2>Sample grids (one row per class)</h2>"] + _figures(grids, grid=True)
    out.append("</body></html>")
    return "\n".join(out)
