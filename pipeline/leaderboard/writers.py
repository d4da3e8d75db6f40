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

from pipeline.leaderboard.columns import HEADERS, display_columns, lower_is_better
from pipeline.leaderboard.rank import groups


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
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, float):
        if column in ("w", "s", "p_uncond"):
            return f"{value:g}"
        if column == "images_per_s":
            return f"{value:.1f}"
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def _heading(key: tuple[str, str], g: pd.DataFrame) -> str:
    dataset, protocol = key
    if (g["source"] == "reported").all():
        cites = sorted({str(c) for c in g.get("citation", pd.Series(dtype=str)).dropna()})
        return f"{dataset} · reported · {protocol}" + (f" ({'; '.join(cites)})" if cites else "")
    summary = protocol_summary(g["protocol_json"].iloc[0]) if "protocol_json" in g else ""
    by = g["ranked_by"].iloc[0] if "ranked_by" in g else ""
    return f"{dataset} · protocol {protocol}" + (f" ({summary})" if summary else "") + (
        f" · ranked by {by}" + (" (lower is better)" if lower_is_better(by) else " (higher is better)") if by else "")


def to_markdown(ranked: pd.DataFrame) -> str:
    """One Markdown table per (dataset, protocol)."""
    if ranked.empty:
        return "_no evaluated configurations_\n"
    lines = []
    for key, g in groups(ranked):
        cols = display_columns(g)
        lines += [f"### {_heading(key, g)}", "", "| " + " | ".join(HEADERS.get(c, c) for c in cols) + " |",
                  "| " + " | ".join("---" for _ in cols) + " |"]
        for _, row in g.iterrows():
            lines.append("| " + " | ".join(_fmt(row.get(c), c) for c in cols) + " |")
        lines.append("")
    return "\n".join(lines)


def to_csv(ranked: pd.DataFrame) -> str:
    cols = ["dataset", "protocol", "source"] + display_columns(ranked) if not ranked.empty else []
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


def to_html(ranked: pd.DataFrame, plots: Optional[dict[str, bytes]] = None,
            grids: Optional[dict[str, bytes]] = None, title: str = "Leaderboard",
            plot_sections: Optional[list[tuple[str, dict[str, bytes]]]] = None) -> str:
    """A self-contained page: inline CSS, the tables, plots and sample grids as data URIs.

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
        out += [f"<h2>{esc(_heading(key, g))}</h2>", f"<div class='wide'><table{cls}><thead><tr>"]
        out += [f"<th>{esc(HEADERS.get(c, c))}</th>" for c in cols] + ["</tr></thead><tbody>"]
        for _, row in g.iterrows():
            cells = [f"<td{' class=text' if c in ('guidance', 'sampler') else ''}>{esc(_fmt(row.get(c), c))}</td>"
                     for c in cols]
            out.append("<tr>" + "".join(cells) + "</tr>")
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
