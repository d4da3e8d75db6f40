"""Leaderboard figures (matplotlib, Agg, imported where drawn: it is heavy): the classifier-free
paper's trade-off curves and the fidelity-diversity frontiers. Each returns PNG bytes."""
from __future__ import annotations

import io
from typing import Optional

import numpy as np
import pandas as pd

from pipeline.diffusion.guidance import GUIDANCE
from pipeline.leaderboard.columns import lower_is_better, metric_columns

KIND_COLORS = {"none": "#444444", "cfg": "#1f77b4", "classifier": "#d62728", "autoguidance": "#2ca02c",
               "pag": "#9467bd"}
OTHER_COLOR = "#888888"  # a kind without a colour of its own
PANELS_PER_ROW = 2  # four kinds in one row were unreadable at a page's width


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _symbol(kind: str) -> str:
    """What a kind's curve is drawn against: "w", or "s" for a kind whose strength is a scale."""
    return GUIDANCE[kind].symbol if kind in GUIDANCE else "w"


def _axis_label(kind: str) -> str:
    return GUIDANCE[kind].strength_name if kind in GUIDANCE else "guidance weight w (s = 1 + w)"


def _variant(row) -> str:
    """What else sets a guided configuration apart on a curve: its guidance interval, PAG layers."""
    interval, layers = row.get("guidance_interval"), row.get("pag_layers")
    parts = []
    if interval is not None and not (isinstance(interval, float) and np.isnan(interval)):
        parts.append("interval " + "-".join(f"{v:g}" for v in interval))
    if isinstance(layers, str) and layers != "paper":
        parts.append(f"layers {layers}")
    return ", ".join(parts)


def tradeoff_plot(df: pd.DataFrame, metric: str, title: str = "") -> Optional[bytes]:
    """`metric` against guidance strength: a panel per guidance kind, a line per p_uncond (and
    sampler/steps, interval, layers). The unguided model is w = 0 of every curve drawn against w;
    reported rows are dashed."""
    if metric not in df or not df[metric].notna().any():
        return None
    registered = list(GUIDANCE)
    kinds = sorted({k for k in df["guidance"].dropna() if k != "none"},
                   key=lambda k: (registered.index(k) if k in registered else len(registered), k)) or ["none"]
    df = df.assign(variant=[_variant(row) for _, row in df.iterrows()])
    plt = _pyplot()
    cols = min(len(kinds), PANELS_PER_ROW)
    rows = -(-len(kinds) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.8 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(kinds):]:
        ax.set_visible(False)
    for ax, kind in zip(axes.flat, kinds):
        symbol = _symbol(kind)
        guided, unguided = df[df["guidance"] == kind], df[df["guidance"] == "none"]
        for variant in dict.fromkeys(guided["variant"]):
            part = guided[guided["variant"] == variant]
            if symbol == "w" and kind != "none":
                part = pd.concat([unguided, part])
            _draw_lines(ax, part, kind, symbol, metric, variant)
        ax.set_xlabel(_axis_label(kind))
        ax.set_ylabel(metric + (" (lower is better)" if lower_is_better(metric) else ""))
        ax.set_title(kind)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _png(fig)


def _draw_lines(ax, part: pd.DataFrame, kind: str, symbol: str, metric: str, variant: str) -> None:
    line_keys = [k for k in ("source", "p_uncond", "sampler", "steps") if k in part]
    for key, line in part.groupby(line_keys, dropna=False):
        key = dict(zip(line_keys, key if isinstance(key, tuple) else (key,)))
        line = line[line[metric].notna()]
        if line.empty or (kind != "none" and not (line["guidance"] == kind).any()):
            continue
        xs = line[symbol].to_numpy(float)
        order = np.argsort(xs, kind="stable")
        label = f"p_uncond={key.get('p_uncond'):g}" if pd.notna(key.get("p_uncond")) else "model"
        if pd.notna(key.get("sampler")):
            label += f", {key['sampler']} {int(key['steps']) if pd.notna(key.get('steps')) else ''}".rstrip()
        label += f", {variant}" if variant else ""
        reported = key.get("source") == "reported"
        ax.plot(xs[order], line[metric].to_numpy()[order], "x--" if reported else "o-",
                label=label + (" (reported)" if reported else ""), alpha=0.9)


def pareto_front(x: np.ndarray, y: np.ndarray, maximize_x: bool, maximize_y: bool) -> np.ndarray:
    """Indices of the points no other point beats on both axes, sorted by x."""
    sx = x if maximize_x else -x
    sy = y if maximize_y else -y
    front = [i for i in range(len(x))
             if not any((sx[j] >= sx[i] and sy[j] >= sy[i]) and (sx[j] > sx[i] or sy[j] > sy[i])
                        for j in range(len(x)))]
    return np.array(sorted(front, key=lambda i: x[i]), dtype=int)


def frontier_plot(df: pd.DataFrame, x: str, y: str, title: str = "") -> Optional[bytes]:
    """Every configuration as a point coloured by guidance kind, with the Pareto frontier."""
    if x not in df or y not in df:
        return None
    part = df[df[x].notna() & df[y].notna()]
    if part.empty:
        return None
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(5, 4))
    for kind, pts in part.groupby("guidance"):
        ax.scatter(pts[x], pts[y], color=KIND_COLORS.get(kind, OTHER_COLOR), label=kind, s=24, alpha=0.85)
    xs, ys = part[x].to_numpy(float), part[y].to_numpy(float)
    front = pareto_front(xs, ys, not lower_is_better(x), not lower_is_better(y))
    ax.plot(xs[front], ys[front], "k:", lw=1, label="frontier")
    ax.xaxis.set_major_locator(MaxNLocator(6))  # values close together otherwise print overlapping labels
    ax.set_xlabel(x + (" (lower is better)" if lower_is_better(x) else ""))
    ax.set_ylabel(y + (" (lower is better)" if lower_is_better(y) else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    return _png(fig)


def _first(df: pd.DataFrame, names: tuple[str, ...]) -> Optional[str]:
    return next((n for n in names if n in df and df[n].notna().any()), None)


def leaderboard_plots(df: pd.DataFrame, title: str = "") -> dict[str, bytes]:
    """Every trade-off curve and both frontiers of one (dataset, protocol) table, by file stem."""
    plots = {}
    for metric in metric_columns(df):
        if metric.endswith("_std") or metric == "images_per_s":
            continue
        png = tradeoff_plot(df, metric, title)
        if png:
            plots[f"tradeoff_{metric}"] = png
    for space in ("evalnet", "inception"):
        png = frontier_plot(df, f"recall_{space}", f"precision_{space}", title)
        if png:
            plots[f"frontier_precision_recall_{space}"] = png
    fd, is_ = _first(df, ("fid", "fd_evalnet")), _first(df, ("is", "is_evalnet"))
    if fd and is_:
        png = frontier_plot(df, is_, fd, title)
        if png:
            plots[f"frontier_{fd}_{is_}"] = png
    return plots
