"""Leaderboard figures (matplotlib, Agg, imported where drawn: it is heavy): the classifier-free
paper's trade-off curves and the fidelity-diversity frontiers. Each returns PNG bytes (the
`*_figure` functions return the matplotlib figure, for tests to look inside).

Every reproduced number is drawn with its 95% interval as an error bar (FD's interval is
bias-corrected and may lie below its point: the bar is drawn from low to high, not around the
point); published rows have none and are drawn dashed (a row without a strength, a baseline such
as BigGAN, as a dashed horizontal line at its value)."""
from __future__ import annotations

import io
from typing import Optional

import numpy as np
import pandas as pd

from pipeline.diffusion.guidance import GUIDANCE
from pipeline.leaderboard.columns import ci_columns, lower_is_better, metric_columns

KIND_COLORS = {"none": "#444444", "cfg": "#1f77b4", "classifier": "#d62728", "autoguidance": "#2ca02c",
               "pag": "#9467bd"}
OTHER_COLOR = "#888888"  # a kind without a colour of its own
PANELS_PER_ROW = 2  # four kinds in one row were unreadable at a page's width
LEGEND_INSIDE = 6  # more legend entries than this go under the panel
LEGEND_LINE_IN = 0.14  # height of one legend entry under a panel, inches
MODEL_MARKERS = "x+*^vd"  # published models' markers, a new one each time the colours run out
REPRODUCED_MARKERS = "osD^v<>"  # reproduced lines of one colour (sampler, steps, variant) told apart


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


def _bounds(rows: pd.DataFrame, metric: str) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """(low, high) of `metric`'s interval per row (NaN where a row has none), or None."""
    low, high = ci_columns(metric)
    if low not in rows or high not in rows:
        return None
    lows = pd.to_numeric(rows[low], errors="coerce").to_numpy(float)
    highs = pd.to_numeric(rows[high], errors="coerce").to_numpy(float)
    return (lows, highs) if (np.isfinite(lows) & np.isfinite(highs)).any() else None


def _error_bars(ax, x: np.ndarray, y: np.ndarray, bounds, color, horizontal: bool = False) -> None:
    """Bars from each interval's low to its high, at the points' other coordinate."""
    if bounds is None:
        return
    low, high = bounds
    ok = np.isfinite(low) & np.isfinite(high) & np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return
    mid, half = (low[ok] + high[ok]) / 2, (high[ok] - low[ok]) / 2
    kw = dict(fmt="none", ecolor=color, elinewidth=1, capsize=2, alpha=0.6)
    if horizontal:
        ax.errorbar(mid, y[ok], xerr=half, **kw)
    else:
        ax.errorbar(x[ok], mid, yerr=half, **kw)


def tradeoff_plot(df: pd.DataFrame, metric: str, title: str = "") -> Optional[bytes]:
    fig = tradeoff_figure(df, metric, title)
    return None if fig is None else _png(fig)


def tradeoff_figure(df: pd.DataFrame, metric: str, title: str = ""):
    """`metric` against guidance strength: a panel per guidance kind, a line per model, p_uncond
    (and sampler/steps, interval, layers), each point with its interval. The unguided model is
    w = 0 of every curve drawn against w; reported rows are dashed."""
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
    palette = _palette(df)
    below = np.zeros(axes.shape, dtype=int)  # legend entries drawn under each panel
    for (row, col), kind in zip(np.ndindex(axes.shape), kinds):
        ax = axes[row, col]
        symbol = _symbol(kind)
        guided, unguided = df[df["guidance"] == kind], df[df["guidance"] == "none"]
        published_model = unguided["model"].map(lambda m: isinstance(m, str)).astype(bool) if "model" in unguided \
            else pd.Series(False, index=unguided.index)
        markers: dict = {}
        for i, variant in enumerate(dict.fromkeys(guided["variant"])):
            part = guided[guided["variant"] == variant]
            if symbol == "w" and kind != "none":  # w = 0 of each curve; published baselines once a panel
                baselines = [unguided[published_model]] if i == 0 else []
                part = pd.concat([unguided[~published_model], *baselines, part])
            _draw_lines(ax, part, kind, symbol, metric, variant, palette, markers)
        ax.set_xlabel(_axis_label(kind))
        ax.set_ylabel(metric + (" (lower is better)" if lower_is_better(metric) else ""))
        ax.set_title(kind)
        ax.grid(alpha=0.3)
        below[row, col] = _legend(ax)
    # the panels keep their height; long legends under them make the figure taller
    fig.set_size_inches(4.8 * cols, 3.6 * rows + LEGEND_LINE_IN * below.max(axis=1).sum())
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _palette(df: pd.DataFrame) -> dict:
    """A (colour, marker) per p_uncond (a reproduced curve and the published one of the same p_uncond
    share the colour, solid and dashed), then one per published model: models take the colours the
    p_uncond values left, and a new marker each time those run out, so no two lines look alike."""
    import matplotlib

    colors = matplotlib.colormaps["tab10"].colors
    p_values = pd.to_numeric(df["p_uncond"], errors="coerce").dropna().unique() if "p_uncond" in df else []
    palette: dict = {("p_uncond", float(p)): (colors[i % len(colors)], "x") for i, p in enumerate(sorted(p_values))}
    free = colors[len(palette):] or colors
    models = dict.fromkeys(df["model"].dropna()) if "model" in df else {}
    for i, model in enumerate(models):
        palette[("model", model)] = (free[i % len(free)], MODEL_MARKERS[(i // len(free)) % len(MODEL_MARKERS)])
    return palette


def _line_style(key: dict, palette: dict) -> tuple:
    """(colour, the marker of a published line) of a line, (None, "x") for a line of no palette key."""
    if isinstance(key.get("model"), str):
        return palette.get(("model", key["model"]), (None, "x"))
    if pd.notna(key.get("p_uncond")):
        return palette.get(("p_uncond", float(key["p_uncond"])), (None, "x"))
    return None, "x"


def _legend(ax) -> int:
    """One entry per label, in the panel; under it when there are many (published rows add lots):
    returns the number of entries put under the panel."""
    handles = dict(zip(*reversed(ax.get_legend_handles_labels())))
    if len(handles) > LEGEND_INSIDE:
        ax.legend(handles.values(), handles.keys(), fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.18))
        return len(handles)
    if handles:
        ax.legend(handles.values(), handles.keys(), fontsize=7)
    return 0


def _line_label(key: dict, variant: str) -> str:
    parts = [str(key["model"])] if isinstance(key.get("model"), str) else []
    if pd.notna(key.get("p_uncond")):
        parts.append(f"p_uncond={key['p_uncond']:g}")
    if pd.notna(key.get("sampler")):
        parts.append(f"{key['sampler']} {int(key['steps']) if pd.notna(key.get('steps')) else ''}".rstrip())
    label = ", ".join(parts + ([variant] if variant else [])) or "model"
    return label + (" (reported)" if key.get("source") == "reported" else "")


def _draw_lines(ax, part: pd.DataFrame, kind: str, symbol: str, metric: str, variant: str, palette: dict,
                markers: dict) -> None:
    """The panel's lines of one variant; `markers` tells reproduced lines of one colour apart."""
    line_keys = [k for k in ("source", "model", "p_uncond", "sampler", "steps") if k in part]
    for key, line in part.groupby(line_keys, dropna=False, sort=False):
        key = dict(zip(line_keys, key if isinstance(key, tuple) else (key,)))
        line = line[line[metric].notna()]
        reported, baseline = key.get("source") == "reported", isinstance(key.get("model"), str)
        # an unguided line belongs on a kind's panel as the w = 0 of that kind's curve; a published
        # model (a baseline) is drawn on every panel it shares the axis with, as a reference
        if line.empty or (kind != "none" and not (line["guidance"] == kind).any() and not baseline):
            continue
        # a line of this kind carries the variant; a baseline (unguided only) is the same for all
        label = _line_label(key, variant if (line["guidance"] == kind).any() else "")
        xs = line[symbol].to_numpy(float) if symbol in line else np.full(len(line), np.nan)
        ys = line[metric].to_numpy(float)
        color, published_marker = _line_style(key, palette)
        if reported and np.isnan(xs).all():  # a published baseline without a strength: a level to compare with
            for i, y in enumerate(ys):
                ax.axhline(y, ls="--", lw=1, color=color or OTHER_COLOR, alpha=0.8, label=label if i == 0 else None)
            continue
        order = np.argsort(xs, kind="stable")
        if reported:
            style = published_marker + "--"
        else:
            shapes = markers.setdefault(color, {})
            style = REPRODUCED_MARKERS[shapes.setdefault(label, len(shapes)) % len(REPRODUCED_MARKERS)] + "-"
        drawn, = ax.plot(xs[order], ys[order], style, label=label, alpha=0.9, color=color)
        bounds = _bounds(line, metric)
        _error_bars(ax, xs[order], ys[order], None if bounds is None else (bounds[0][order], bounds[1][order]),
                    drawn.get_color())


def pareto_front(x: np.ndarray, y: np.ndarray, maximize_x: bool, maximize_y: bool) -> np.ndarray:
    """Indices of the points no other point beats on both axes, sorted by x."""
    sx = x if maximize_x else -x
    sy = y if maximize_y else -y
    front = [i for i in range(len(x))
             if not any((sx[j] >= sx[i] and sy[j] >= sy[i]) and (sx[j] > sx[i] or sy[j] > sy[i])
                        for j in range(len(x)))]
    return np.array(sorted(front, key=lambda i: x[i]), dtype=int)


def _reported(df: pd.DataFrame) -> pd.Series:
    return df["source"] == "reported" if "source" in df else pd.Series(False, index=df.index)


def frontier_plot(df: pd.DataFrame, x: str, y: str, title: str = "") -> Optional[bytes]:
    fig = frontier_figure(df, x, y, title)
    return None if fig is None else _png(fig)


def frontier_figure(df: pd.DataFrame, x: str, y: str, title: str = ""):
    """Every configuration as a point coloured by guidance kind, with its intervals on both axes,
    and the Pareto frontier of the reproduced ones; published rows (another protocol) are crosses
    beside it, never on its frontier."""
    if x not in df or y not in df:
        return None
    part = df[df[x].notna() & df[y].notna()]
    if part.empty:
        return None
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(5, 4))
    reported = _reported(part)
    for kind, pts in part[~reported].groupby("guidance"):
        color = KIND_COLORS.get(kind, OTHER_COLOR)
        px, py = pts[x].to_numpy(float), pts[y].to_numpy(float)
        ax.scatter(px, py, color=color, label=kind, s=24, alpha=0.85)
        _error_bars(ax, px, py, _bounds(pts, y), color)
        _error_bars(ax, px, py, _bounds(pts, x), color, horizontal=True)
    for kind, pts in part[reported].groupby("guidance"):
        ax.scatter(pts[x], pts[y], color=KIND_COLORS.get(kind, OTHER_COLOR), marker="x", s=30, alpha=0.85,
                   label=f"{kind} (reported)")
    ours = part[~reported]
    xs, ys = ours[x].to_numpy(float), ours[y].to_numpy(float)
    front = pareto_front(xs, ys, not lower_is_better(x), not lower_is_better(y))
    if len(front):
        ax.plot(xs[front], ys[front], "k:", lw=1, label="frontier")
    ax.xaxis.set_major_locator(MaxNLocator(6))  # values close together otherwise print overlapping labels
    ax.set_xlabel(x + (" (lower is better)" if lower_is_better(x) else ""))
    ax.set_ylabel(y + (" (lower is better)" if lower_is_better(y) else ""))
    ax.grid(alpha=0.3)
    _legend(ax)
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def _first(df: pd.DataFrame, names: tuple[str, ...]) -> Optional[str]:
    return next((n for n in names if n in df and df[n].notna().any()), None)


def leaderboard_plots(df: pd.DataFrame, title: str = "") -> dict[str, bytes]:
    """Every trade-off curve and both frontiers of one (dataset, protocol) table, by file stem;
    published rows in `df` are drawn beside, for the metrics the reproduced rows have (a table of
    published rows alone is drawn for its own)."""
    ours = df[~_reported(df)] if not _reported(df).all() else df
    plots = {}
    for metric in metric_columns(ours):
        if metric.endswith("_std") or metric == "images_per_s" or not ours[metric].notna().any():
            continue
        png = tradeoff_plot(df, metric, title)
        if png:
            plots[f"tradeoff_{metric}"] = png
    for space in ("evalnet", "inception"):
        recall, precision = f"recall_{space}", f"precision_{space}"
        png = frontier_plot(df, recall, precision, title) if _first(ours, (recall,)) and _first(
            ours, (precision,)) else None
        if png:
            plots[f"frontier_precision_recall_{space}"] = png
    fd, is_ = _first(ours, ("fid", "fd_evalnet")), _first(ours, ("is", "is_evalnet"))
    if fd and is_:
        png = frontier_plot(df, is_, fd, title)
        if png:
            plots[f"frontier_{fd}_{is_}"] = png
    return plots
