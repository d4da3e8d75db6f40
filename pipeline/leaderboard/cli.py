"""`python -m pipeline.leaderboard`: the ranked table from the sweep's MLflow runs, each metric
with the 95% interval its trial run logged (`<metric>_ci_low` / `_ci_high` metrics).

    python -m pipeline.leaderboard                          # from ./mlflow.db, Markdown
    python -m pipeline.leaderboard --tracking-uri sqlite:///mlflow.db --experiment guided-diffusion \\
        --format csv --metric fid
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional

import pandas as pd

from pipeline.leaderboard.columns import metric_columns
from pipeline.leaderboard.mlflow_runs import rows_from_mlflow
from pipeline.leaderboard.rank import rank
from pipeline.leaderboard.reported import load_reported, resolve_reported
from pipeline.leaderboard.writers import to_csv, to_markdown

DESCRIPTION = "The ranked table of evaluated sampler configurations, from the sweep's MLflow runs."


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.leaderboard", description=DESCRIPTION)
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--experiment", default="guided-diffusion")
    parser.add_argument("--format", choices=("markdown", "csv"), default="markdown")
    parser.add_argument("--metric", default=None, help="sort by this metric (default: fid, else fd_evalnet)")
    parser.add_argument("--reported", default=None, help="YAML file (or glob pattern) of reported rows to show beside")
    args = parser.parse_args(argv)
    rows = rows_from_mlflow(args.tracking_uri, args.experiment)
    reported = resolve_reported(args.reported)
    if reported:
        rows = pd.concat([rows, load_reported(reported)], ignore_index=True)
    if rows.empty:
        print(f"no evaluated configurations in experiment {args.experiment!r} ({args.tracking_uri})", file=sys.stderr)
        return 1
    if args.metric and args.metric not in metric_columns(rows):
        print(f"no metric {args.metric!r}; have: {', '.join(metric_columns(rows))}", file=sys.stderr)
        return 2
    ranked = rank(rows, args.metric)
    print(to_markdown(ranked) if args.format == "markdown" else to_csv(ranked), end="")
    return 0
