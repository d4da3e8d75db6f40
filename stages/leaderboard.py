"""The ranked table, plots and sample grids, logged to MLflow.

Reads the sweep's trials.parquet and sample grids; ranks the configurations per dataset and
protocol (pipeline.leaderboard: rows whose 95% interval overlaps the best's share rank 1), adds the
reported rows of `sweep.reported` (published numbers, marked "reported", never ranked with
reproduced ones, without intervals), and writes
    leaderboard.parquet / leaderboard.md / leaderboard.html (self-contained); every metric with
                                its interval (<metric>_ci_low / _ci_high in the parquet)
    plots/<table>__<plot>.png   trade-off curves (each metric against w per p_uncond) and the
                                precision-recall and FD-IS frontiers, per (dataset, protocol)
                                table, with error bars; published rows dashed
    grids/<config name>.png     one sample grid per configuration, one row per class
all logged as MLflow artifacts of the stage's run, the table also as an MLflow table
(leaderboard_table.json) and the best configuration's metrics as run metrics.
"""
import io
import posixpath

from pipeline.graph import StageSpec
from pipeline.store import safe_name

# Function-local imports: they bring in torch, SciPy and pandas, which planning (it imports every
# stage) does not need.

STAGE = StageSpec(
    name="leaderboard",
    version="2",  # 2: intervals in the tables and plots, shared ranks, published rows drawn beside
    reads=("sweep",),
    inputs=("sweep",),
    outputs=("leaderboard.md", "leaderboard.parquet"),
)


PAGES = ("leaderboard.html", "plots", "leaderboard.md")  # linked from the pipeline run, the first printed at its end


def run(ctx, cfg, inputs):
    import pandas as pd

    from pipeline import leaderboard as lb
    from pipeline.leaderboard.plots import leaderboard_plots

    sweep = inputs["sweep"]
    trials = pd.read_parquet(io.BytesIO(sweep.read_bytes("trials.parquet")))
    trials["source"] = "reproduced"
    reported_file = lb.resolve_reported(cfg.sweep.reported)
    reported = lb.load_reported(reported_file) if reported_file else pd.DataFrame()
    if reported_file:
        ctx.log(f"{len(reported)} reported row(s) from {cfg.sweep.reported}")
    ranked = lb.rank(pd.concat([trials, reported], ignore_index=True) if not reported.empty else trials)

    buf = io.BytesIO()
    lb.write_parquet(ranked, buf)
    ctx.out.write_bytes("leaderboard.parquet", buf.getvalue())
    markdown = lb.to_markdown(ranked)
    ctx.out.write_bytes("leaderboard.md", markdown.encode())

    plots: dict[str, bytes] = {}
    sections: list[tuple[str, dict[str, bytes]]] = []
    # The table with the most configurations first: the screening round's curves have a point per
    # strength, the full-N round's only the best of each kind.
    for (dataset, protocol), table in sorted(lb.groups(ranked), key=lambda group: -len(group[1])):
        if (table["source"] == "reported").all() or len(table) < 2:
            continue
        beside = reported[reported["dataset"] == dataset] if not reported.empty else reported
        title = f"{dataset} · {lb.protocol_summary(table['protocol_json'].iloc[0])}"
        drawn = leaderboard_plots(pd.concat([table, beside], ignore_index=True), title)
        sections.append((f"{title} · {len(table)} configurations", drawn))
        plots.update({f"{safe_name(dataset)}__{protocol}__{name}": png for name, png in drawn.items()})
    for name, png in plots.items():
        ctx.out.write_bytes(f"plots/{name}.png", png)

    grids: dict[str, bytes] = {}
    for name, rel in sorted(set(zip(trials.get("name", []), trials.get("grid", [])))):
        if isinstance(rel, str) and sweep.exists(rel):
            grids[name] = sweep.read_bytes(rel)
            ctx.out.write_bytes(f"grids/{safe_name(name)}.png", grids[name])
    page = lb.to_html(ranked, grids=grids, title=f"Leaderboard · {cfg.tracking.experiment}", plot_sections=sections)
    ctx.out.write_bytes("leaderboard.html", page.encode())

    headline = _headline(ranked)
    _log_to_mlflow(ctx, ranked, headline)
    ctx.log(f"{len(ranked)} row(s) in {len(lb.groups(ranked))} table(s), {len(plots)} plot(s), {len(grids)} grid(s)")
    print(markdown, flush=True)
    best = ranked.iloc[0] if not ranked.empty else None
    return {"rows": int(len(ranked)), "tables": len(lb.groups(ranked)), "plots": len(plots), "grids": len(grids),
            "reported_rows": int(len(reported)), "pages": list(PAGES), "headline": headline,
            "best": None if best is None else {"name": best.get("name"), "ranked_by": best.get("ranked_by"),
                                               "protocol": best.get("protocol"), "num_images": _num(best.get("num_images"))}}


def _num(value):
    try:
        return None if value is None or value != value else float(value)
    except TypeError:
        return None


def _headline(ranked) -> dict[str, float]:
    """The numbers a run is compared by, from the first table (the most images): every metric of
    its best configuration with its interval (`best.<metric>`, `best.<metric>_ci_low/_high`) and
    the best ranking metric of each guidance kind (`<kind>.<metric>`)."""
    from pipeline.leaderboard import groups, lower_is_better, metric_columns
    from pipeline.leaderboard.columns import ci_columns

    tables = [table for _, table in groups(ranked) if not (table["source"] == "reported").all()]
    if not tables or not tables[0]["ranked_by"].iloc[0]:
        return {}
    top = tables[0]
    best, by = top.iloc[0], top["ranked_by"].iloc[0]
    names = [name for m in metric_columns(top) for name in (m, *ci_columns(m))]
    headline = {f"best.{name}": float(best[name]) for name in names if _num(best.get(name)) is not None}
    for kind, rows in top.groupby("guidance"):
        values = rows[by].dropna()
        if len(values):
            headline[f"{kind}.{by}"] = float(values.min() if lower_is_better(by) else values.max())
    return headline


def _log_to_mlflow(ctx, ranked, headline: dict[str, float]) -> None:
    from pipeline.leaderboard import groups
    from pipeline.leaderboard.mlflow_runs import (
        BEST_TAG,
        DATASET_TAG,
        PROTOCOL_TAG,
        RANKED_BY_TAG,
    )
    from pipeline.leaderboard.writers import table_columns

    for rel in ctx.out.files():
        with ctx.out.local_file(rel) as path:
            ctx.log_artifact(path, posixpath.dirname(rel) or None)
    if ranked.empty:
        return
    table = ranked[table_columns(ranked)].astype(object)  # the CSV's columns: each metric with its interval
    table = table.where(table.notna(), None)
    ctx.tracker.client.log_table(ctx.tracker.run_id, data=table, artifact_file="leaderboard_table.json")
    (dataset, protocol), top = groups(ranked)[0]
    best = top.iloc[0]
    ctx.log_metrics({**headline, "rows": float(len(ranked))})
    ctx.set_tags({BEST_TAG: str(best.get("name", "")), DATASET_TAG: dataset, PROTOCOL_TAG: protocol,
                  RANKED_BY_TAG: str(best.get("ranked_by", ""))})
