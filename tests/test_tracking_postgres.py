"""The pipeline's MLflow tracking on a real PostgreSQL server (the cluster path's database), started
and stopped by these tests: nested runs, failures, the registry, stale runs, several processes
writing at once to a fresh database, and (slow) a pipeline run through the MLflow server that
cluster/kuberay-mlflow.yaml starts, read back by `python -m pipeline.leaderboard`."""
from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys

import pytest

from tests.postgres import PostgresServer, why_unavailable

pytestmark = pytest.mark.skipif(why_unavailable() is not None, reason=why_unavailable() or "")


@pytest.fixture(scope="module")
def postgres():
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def database(postgres, request):
    """A fresh, empty database of its own for each test."""
    return postgres.create_database(request.node.name.replace("[", "_").replace("]", "")[:60])


def _tracker(uri: str, artifacts, experiment: str = "guided-diffusion"):
    from pipeline.config import TrackingConfig
    from pipeline.tracking import Tracker

    return Tracker(TrackingConfig(uri=uri, artifact_location=str(artifacts), experiment=experiment))


def test_nested_runs_params_metrics_and_failures(database, tmp_path):
    from pipeline.config import load_config

    tracker = _tracker(database, tmp_path / "art")
    config = load_config()
    with pytest.raises(RuntimeError):
        with tracker.pipeline_run(config, "configs/default.yaml", {"shard": "k" * 64}) as parent:
            parent.log_config(config)
            with tracker.run("train_diffusion[p_uncond=0.1]", {"pipeline.stage": "train_diffusion"},
                             parent=parent.run_id) as child:
                child.log_metric_rows([(step, {"loss": 1.0 / (step + 1), "lr": 2e-4}) for step in range(1500)])
                child.log_params({"long": "x" * 7000})
                child.log_text("weights", "model/model.json")
                version = child.register_model("guided-diffusion.diffusion.p_uncond_0.1", "model")
            with tracker.run("sweep", {}, parent=parent.run_id) as failed:
                raise RuntimeError("trial 3 ran out of memory")

    client = tracker.client
    got = client.get_run(child.run_id)
    assert got.data.tags["mlflow.parentRunId"] == parent.run_id and got.info.status == "FINISHED"
    history = client.get_metric_history(child.run_id, "loss")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(1500))
    assert got.data.params["long"].endswith("...") and len(got.data.params["long"]) == 6000
    assert [a.path for a in client.list_artifacts(child.run_id, "model")] == ["model/model.json"]
    assert version == "guided-diffusion.diffusion.p_uncond_0.1/1"
    failed_run = client.get_run(failed.run_id)
    assert failed_run.info.status == "FAILED"
    assert failed_run.data.tags["pipeline.failure"] == "RuntimeError: trial 3 ran out of memory"
    top = client.get_run(parent.run_id)
    assert top.info.status == "FAILED"  # the sweep's error ended the pipeline run too
    assert top.data.params["train.lr"] == str(config.train.lr) and top.data.tags["store.key.shard"] == "k" * 64


def test_runs_of_dead_processes_are_marked_failed(database, tmp_path):
    tracker = _tracker(database, tmp_path / "art")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tracker.client.create_run(tracker.experiment_id, tags={
        "pipeline.host": tracker.host, "pipeline.pid": str(dead.pid), "pipeline.pid_start": "1"})
    assert tracker.fail_stale_runs() == [stale.info.run_id]
    assert tracker.client.get_run(stale.info.run_id).info.status == "FAILED"


def _write_concurrently(uri: str, artifacts: str, index: int, start, queue) -> None:
    """One writer: waits for the others, then opens the (fresh) database and logs a pipeline-shaped
    tree of runs."""
    try:
        start.wait(timeout=120)
        tracker = _tracker(uri, artifacts, experiment="race")
        with tracker.run(f"pipeline-{index}", {"writer": str(index)}) as parent:
            for stage in range(3):
                with tracker.run(f"stage-{stage}", {"writer": str(index)}, parent=parent.run_id) as child:
                    child.log_metric_rows([(step, {"loss": index + step / 100}) for step in range(100)])
                    child.log_params({"stage": stage})
        queue.put(("ok", tracker.experiment_id))
    except BaseException as exc:  # reported to the parent, which fails the test
        queue.put(("error", f"{type(exc).__name__}: {exc}"[:3000]))


@pytest.mark.slow
def test_several_processes_write_to_a_fresh_database_at_once(database, tmp_path):
    """MLflow creates its schema on first use; on a fresh database several processes doing that at
    once collide (duplicate alembic_version) unless the first access is serialised."""
    writers = 4
    ctx = mp.get_context("spawn")
    queue, start = ctx.Queue(), ctx.Barrier(writers)
    procs = [ctx.Process(target=_write_concurrently, args=(database, str(tmp_path / "art"), i, start, queue))
             for i in range(writers)]
    for p in procs:
        p.start()
    try:
        results = [queue.get(timeout=300) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=60)
    assert all(status == "ok" for status, _ in results), results
    assert len({experiment for _, experiment in results}) == 1

    tracker = _tracker(database, tmp_path / "art", experiment="race")
    runs = tracker.client.search_runs([tracker.experiment_id], max_results=1000)
    parents = {r.info.run_id: r for r in runs if "mlflow.parentRunId" not in r.data.tags}
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == writers and len(children) == 3 * writers
    for child in children:  # each stage run under its own writer's pipeline run, its metrics whole
        parent = parents[child.data.tags["mlflow.parentRunId"]]
        assert parent.data.tags["writer"] == child.data.tags["writer"]
        assert len(tracker.client.get_metric_history(child.info.run_id, "loss")) == 100
    assert {r.info.status for r in runs} == {"FINISHED"}
