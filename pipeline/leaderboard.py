"""The leaderboard: evaluated sampler configurations ranked per dataset and protocol.

    python -m pipeline.leaderboard                          # from ./mlflow.db, Markdown
    python -m pipeline.leaderboard --tracking-uri sqlite:///mlflow.db --experiment guided-diffusion \
        --format csv --metric fid

Rows come from the sweep (`trials.parquet`, or the nested MLflow runs of its trials) and
from reported results of papers (a YAML file of rows, marked `reported`). Two numbers are
ranked together only when their dataset and protocol (feature extractor, number of samples,
reference statistics, seed range) match; every (dataset, protocol) pair is its own table.
The guidance strength is shown as the classifier-free paper's w and as the scale s = 1 + w;
for classifier guidance the strength is ADM's classifier scale, shown as s (w is empty).
"""
from __future__ import annotations

import argparse
import base64
import html
import json
import math
import sys
from pathlib import Path
from typing import Any, Iterable, Optional

import pandas as pd

# What describes a configuration, in display order (metrics follow).
CONFIG_COLUMNS = ("guidance", "w", "s", "p_uncond", "sampler", "steps", "precision", "nfe", "images_per_s", "num_images")
HEADERS = {"num_images": "N", "nfe": "NFE/img", "images_per_s": "img/s", "precision": "dtype"}
# Metrics shown first when present, then any other metric in alphabetical order.
METRIC_ORDER = ("fid", "is", "fd_evalnet", "is_evalnet", "precision_evalnet", "recall_evalnet", "class_accuracy",
                "precision_inception", "recall_inception", "kid_mean", "kid_evalnet_mean")
NON_METRICS = frozenset(CONFIG_COLUMNS) | {
    "rank", "dataset", "protocol", "protocol_json", "source", "citation", "config_id", "name", "fidelity", "eta",
    "class_dist", "seed", "grid", "strength", "seconds", "round", "interval", "generated", "generate_seconds",
    "mlflow_run_id", "notes", "ranked_by", "node_id"}
SOURCES = ("reproduced", "reported")


def lower_is_better(metric: str) -> bool:
    """FD/FID and KID are distances; IS, precision, recall and accuracy are better high."""
    return metric.startswith(("fd_", "fid", "kid"))


def metric_columns(df: pd.DataFrame) -> list[str]:
    numeric = [c for c in df.columns if c not in NON_METRICS and pd.api.types.is_numeric_dtype(df[c])]
    first = [m for m in METRIC_ORDER if m in numeric]
    return first + sorted(c for c in numeric if c not in first)


def default_metric(df: pd.DataFrame) -> Optional[str]:
    """FID when the group has it (the comparable number), else the offline fd_evalnet."""
    for name in ("fid", "fd_evalnet"):
        if name in df.columns and df[name].notna().any():
            return name
    metrics = [m for m in metric_columns(df) if df[m].notna().any()]
    return metrics[0] if metrics else None


def guidance_strengths(guidance: str, strength: float) -> tuple[Optional[float], float]:
    """(w, s) of a configuration: s = 1 + w, except classifier guidance whose strength is s itself."""
    if guidance == "classifier":
        return None, float(strength)
    if guidance == "none":
        return 0.0, 1.0
    return float(strength), 1.0 + float(strength)


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


# ----------------------------------------------------------------------------------------------
# Ranking


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

    Adds `rank` (1 = best; empty where the metric is missing) and `ranked_by`; groups come one
    after another: reproduced before reported, larger N first.
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
        ranks = g[by].rank(method="min", ascending=lower_is_better(by))
        g["rank"] = pd.array([pd.NA if math.isnan(r) else int(r) for r in ranks], dtype="Int64")
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


def display_columns(df: pd.DataFrame) -> list[str]:
    """The table's columns: rank, the configuration, every metric (spreads like is_std stay in the parquet)."""
    cols = ["rank"] + [c for c in CONFIG_COLUMNS if c in df.columns]
    return cols + [m for m in metric_columns(df) if df[m].notna().any() and not m.endswith("_std")]


# ----------------------------------------------------------------------------------------------
# Writers


def _fmt(value: Any, column: str) -> str:
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


# ----------------------------------------------------------------------------------------------
# Reported rows


def load_reported(path: str | Path) -> pd.DataFrame:
    """Rows of a YAML file of published results, marked `reported`.

    Format: {dataset, protocol, citation, rows: [{guidance, w | s, p_uncond, steps, num_images, fid, is, ...}]}.
    """
    import yaml

    spec = yaml.safe_load(Path(path).read_text()) or {}
    rows = []
    for item in spec.get("rows") or []:
        row = dict(item)
        guidance = row.setdefault("guidance", "cfg")
        strength = row.pop("s", None) if guidance == "classifier" else row.pop("w", None)
        if strength is not None:
            row["w"], row["s"] = guidance_strengths(guidance, strength)
        row.update(dataset=spec.get("dataset", "unknown"), protocol=spec.get("protocol", "reported"),
                   source="reported", citation=row.get("citation", spec.get("citation", "")))
        rows.append(row)
    return pd.DataFrame(rows)


def resolve_reported(path: Optional[str]) -> Optional[Path]:
    """The reported-rows file: as given, or relative to the repository root."""
    if not path:
        return None
    for candidate in (Path(path), Path(__file__).resolve().parent.parent / path):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"reported results file {path} not found (relative to the cwd or the repository)")


# ----------------------------------------------------------------------------------------------
# From MLflow

TRIAL_KIND = "sweep_trial"  # tag pipeline.kind of the sweep's nested trial runs


def rows_from_mlflow(tracking_uri: str, experiment: str) -> pd.DataFrame:
    """One row per evaluated configuration from the sweep's nested MLflow runs (latest run wins)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"no MLflow experiment {experiment!r} in {tracking_uri}")
    runs, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id], filter_string=f"tags.`pipeline.kind` = '{TRIAL_KIND}'",
                                  max_results=1000, page_token=token, order_by=["attributes.start_time DESC"])
        runs.extend(page)
        token = page.token
        if not token:
            break
    rows, seen = [], set()
    for run in runs:
        tags, params = run.data.tags, run.data.params
        row: dict[str, Any] = {k: _parse(v) for k, v in params.items()}
        row.update(run.data.metrics)
        row.update(dataset=tags.get("leaderboard.dataset", "unknown"), protocol=tags.get("leaderboard.protocol", ""),
                   protocol_json=tags.get("leaderboard.protocol_json", ""), source="reproduced")
        key = (row["dataset"], row["protocol"], row.get("config_id"))
        if key in seen:
            continue
        seen.add(key)
        rows.append(row)
    return pd.DataFrame(rows)


def _parse(text: str) -> Any:
    if text in ("None", ""):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.leaderboard", description=__doc__.split("\n")[0])
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--experiment", default="guided-diffusion")
    parser.add_argument("--format", choices=("markdown", "csv"), default="markdown")
    parser.add_argument("--metric", default=None, help="sort by this metric (default: fid, else fd_evalnet)")
    parser.add_argument("--reported", default=None, help="YAML file of reported rows to show beside")
    args = parser.parse_args(argv)
    rows = rows_from_mlflow(args.tracking_uri, args.experiment)
    reported = resolve_reported(args.reported)
    if reported is not None:
        rows = pd.concat([rows, load_reported(reported)], ignore_index=True)
    if rows.empty:
        print(f"no evaluated configurations in experiment {args.experiment!r} ({args.tracking_uri})", file=sys.stderr)
        return 1
    if args.metric and args.metric not in rows:
        print(f"no metric {args.metric!r}; have: {', '.join(metric_columns(rows))}", file=sys.stderr)
        return 2
    ranked = rank(rows, args.metric)
    print(to_markdown(ranked) if args.format == "markdown" else to_csv(ranked), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
