"""The pipeline's MLflow tracking on a real PostgreSQL server (the cluster path's database), started
and stopped by these tests: nested runs, failures, the registry, stale runs, several processes
writing at once to a fresh database, and (slow) a pipeline run through the MLflow server that
cluster/kuberay-mlflow.yaml starts, read back by `python -m pipeline.leaderboard`."""
from __future__ import annotations

import io
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.postgres import PostgresServer, why_unavailable

REPO = Path(__file__).resolve().parent.parent

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


def test_an_experiment_another_process_created_meanwhile_is_used(database, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    first = _tracker(database, tmp_path / "art", experiment="shared")
    lookup = MlflowClient.get_experiment_by_name
    calls = []

    def lookup_before_the_other_create(self, name):  # the other process creates it right after this
        calls.append(name)
        return None if len(calls) == 1 else lookup(self, name)

    monkeypatch.setattr(MlflowClient, "get_experiment_by_name", lookup_before_the_other_create)
    second = _tracker(database, tmp_path / "art", experiment="shared")
    assert second.experiment_id == first.experiment_id and len(calls) == 2


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


# -- the cluster path: the pipeline's driver logs to the MLflow server of cluster/kuberay-mlflow.yaml

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_command(database: str, artifacts: Path, port: int) -> tuple[list[str], dict]:
    """The MLflow container of cluster/kuberay-mlflow.yaml as a local process: its command and
    environment, the Secret's `uri` being this test's database and the object store a local folder.
    It listens on loopback here (the manifest's 0.0.0.0 is the pod's network), on a free port."""
    docs = {d["kind"]: d for d in yaml.safe_load_all((REPO / "cluster/kuberay-mlflow.yaml").read_text())}
    (container,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    command = list(container["command"])
    command[0] = str(Path(sys.executable).with_name(command[0]))
    command[command.index("--port") + 1] = str(port)
    command[command.index("--host") + 1] = "127.0.0.1"
    # one worker: uvicorn restarts workers that miss its 5 s health ping while importing MLflow's
    # app, which on a machine as loaded as a shared CI box can go on forever
    command[command.index("--workers") + 1] = "1"
    secrets = {("guided-diffusion-mlflow-db", "uri"): database}
    env = {}
    for var in container["env"]:
        if "valueFrom" in var:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = secrets[(ref["name"], ref["key"])]
        else:
            env[var["name"]] = var["value"]
    assert env["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    env["MLFLOW_ARTIFACTS_DESTINATION"] = str(artifacts)
    return command, env


@pytest.fixture
def mlflow_server(database, tmp_path):
    port = _free_port()
    artifacts = tmp_path / "object-store"
    command, env = _server_command(database, artifacts, port)
    log = tmp_path / "mlflow-server.log"
    server = subprocess.Popen(command, env={**os.environ, **env}, cwd=tmp_path, stdout=open(log, "w"),
                              stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300  # it imports MLflow's app before listening: minutes on a busy machine
    try:
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2).read()
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise AssertionError("the MLflow server did not come up:\n" + log.read_text()[-3000:])
                time.sleep(1)
        yield url, artifacts
    finally:
        # the server and its workers: the process group this fixture started, nothing else
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)


def _leaderboard(uri: str) -> pd.DataFrame:
    printed = subprocess.run([sys.executable, "-m", "pipeline.leaderboard", "--tracking-uri", uri, "--format", "csv"],
                             capture_output=True, text=True, timeout=300, cwd=REPO)
    assert printed.returncode == 0, printed.stderr[-3000:]
    return pd.read_csv(io.StringIO(printed.stdout))


@pytest.mark.slow
def test_a_pipeline_run_through_the_mlflow_server_on_postgres(mlflow_server, database, tmp_path):
    """The tiny sweep graph (tests/sweep_stages: random-weight models, the real sweep and
    leaderboard stages) through the real runner, tracked as on the cluster."""
    from mlflow.tracking import MlflowClient

    url, artifacts = mlflow_server
    workdir = tmp_path / "driver"
    workdir.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
           "RAY_DEDUP_LOGS": "0", "TQDM_DISABLE": "1"}
    run = subprocess.run([sys.executable, "-m", "tests.sweep_stages.drive", str(workdir), "--set", f"tracking.uri={url}"],
                         cwd=workdir, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]

    # everything is in PostgreSQL and the object store; nothing on the driver's disk
    client = MlflowClient(tracking_uri=database)
    experiment = client.get_experiment_by_name("guided-diffusion")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    (pipeline,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    stages = {r.data.tags["pipeline.stage"]: r for r in runs
              if r.data.tags.get("mlflow.parentRunId") == pipeline.info.run_id}
    trials = [r for r in runs if r.data.tags.get("pipeline.kind") == "sweep_trial"]
    assert {"sweep", "leaderboard"} <= set(stages)
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {stages["sweep"].info.run_id}
    assert {r.info.status for r in runs} == {"FINISHED"}
    board = stages["leaderboard"]
    stored = artifacts / experiment.experiment_id / board.info.run_id / "artifacts"
    assert (stored / "leaderboard.html").stat().st_size > 0
    assert not (workdir / "mlruns").exists() and not list(workdir.glob("*.db"))

    # the leaderboard CLI reads it back, through the server and straight from the database
    via_server, via_database = _leaderboard(url), _leaderboard(database)
    assert len(via_server) == len(trials) and via_server.equals(via_database)
    assert via_server["rank"].notna().all() and via_server["fd_evalnet"].notna().all()
