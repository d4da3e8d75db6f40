"""The leaderboard: evaluated sampler configurations ranked per dataset and protocol.

columns      which columns describe a configuration, which are metrics, which way is better
rank         ranking within each (dataset, protocol) table
writers      Markdown, CSV, parquet, self-contained HTML
reported     published rows from a YAML file, marked `reported`
mlflow_runs  the sweep's trial runs: their tags, and reading them back as rows
plots        trade-off curves, fidelity-diversity frontiers
cli          `python -m pipeline.leaderboard`
"""
from pipeline.leaderboard.cli import main
from pipeline.leaderboard.columns import display_columns, lower_is_better, metric_columns
from pipeline.leaderboard.mlflow_runs import TRIAL_KIND, rows_from_mlflow
from pipeline.leaderboard.rank import default_metric, groups, rank
from pipeline.leaderboard.reported import load_reported, resolve_reported
from pipeline.leaderboard.writers import protocol_summary, to_csv, to_html, to_markdown, write_parquet

__all__ = ["main", "display_columns", "lower_is_better", "metric_columns", "TRIAL_KIND", "rows_from_mlflow",
           "default_metric", "groups", "rank", "load_reported", "resolve_reported", "protocol_summary", "to_csv",
           "to_html", "to_markdown", "write_parquet"]
