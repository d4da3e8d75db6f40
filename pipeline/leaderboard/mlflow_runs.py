"""The sweep's trials as MLflow runs: how a trial run is tagged (the sweep stage writes the tags
with ``trial_run_tags``) and reading the runs back as leaderboard rows. MLflow is imported where
it is used: it is heavy, and the rest of the leaderboard does not need it."""
from __future__ import annotations

from typing import Any

import pandas as pd

KIND_TAG = "pipeline.kind"
TRIAL_KIND = "sweep_trial"  # KIND_TAG of the sweep's nested trial runs
DATASET_TAG = "leaderboard.dataset"
PROTOCOL_TAG = "leaderboard.protocol"
PROTOCOL_JSON_TAG = "leaderboard.protocol_json"
FIDELITY_TAG = "sweep.fidelity"
BEST_TAG = "leaderboard.best"          # the leaderboard stage's run: its best configuration
RANKED_BY_TAG = "leaderboard.ranked_by"


def trial_run_tags(row: dict[str, Any], fidelity: str) -> dict[str, str]:
    """The tags that make a run a sweep trial the leaderboard reads: ``row`` is the trial's row."""
    return {KIND_TAG: TRIAL_KIND, DATASET_TAG: row["dataset"], PROTOCOL_TAG: row["protocol"],
            PROTOCOL_JSON_TAG: row["protocol_json"], FIDELITY_TAG: fidelity}


def rows_from_mlflow(tracking_uri: str, experiment: str) -> pd.DataFrame:
    """One row per evaluated configuration from the sweep's finished nested MLflow runs (latest run
    wins; a run whose logging a stop signal cut is FAILED and logged again by the re-run)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"no MLflow experiment {experiment!r} in {tracking_uri}")
    runs, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id],
                                  filter_string=f"tags.`{KIND_TAG}` = '{TRIAL_KIND}' and attributes.status = 'FINISHED'",
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
        row.update(dataset=tags.get(DATASET_TAG, "unknown"), protocol=tags.get(PROTOCOL_TAG, ""),
                   protocol_json=tags.get(PROTOCOL_JSON_TAG, ""), source="reproduced")
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
