"""MLflow tracking on a real sqlite store: safe creation under concurrency, FAILED on errors,
stale RUNNING runs cleaned up, reproducibility tags."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys

import pytest

from pipeline.config import DEFAULT_CONFIG, TrackingConfig, load_config
from pipeline.tracking import Tracker, safe_key


def _start_and_log(db_uri: str, artifacts: str, index: int, queue) -> None:
    try:
        tracker = Tracker(TrackingConfig(uri=db_uri, artifact_location=artifacts, experiment="race"))
        with tracker.run(f"proc-{index}", {"index": str(index)}) as run:
            run.log_metrics({"value": index})
        queue.put(("ok", tracker.experiment_id))
    except Exception as exc:  # reported to the parent, which fails the test
        queue.put(("error", repr(exc)))


@pytest.mark.slow
def test_several_processes_create_a_fresh_sqlite_store_at_once(tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    procs = [ctx.Process(target=_start_and_log, args=(uri, str(tmp_path / "mlruns"), i, queue)) for i in range(4)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert all(status == "ok" for status, _ in results), results
    assert len({exp for _, exp in results}) == 1
    tracker = Tracker(TrackingConfig(uri=uri, artifact_location=str(tmp_path / "mlruns"), experiment="race"))
    runs = tracker.client.search_runs([tracker.experiment_id])
    assert sorted(r.data.metrics["value"] for r in runs) == [0, 1, 2, 3]
    assert {r.info.status for r in runs} == {"FINISHED"}


def _tracker(tmp_path) -> Tracker:
    return Tracker(TrackingConfig(uri=f"sqlite:///{tmp_path / 'm.db'}", artifact_location=str(tmp_path / "art")))


def test_an_exception_ends_the_run_failed_with_the_reason(tmp_path):
    tracker = _tracker(tmp_path)
    with pytest.raises(RuntimeError):
        with tracker.run("boom", {}) as run:
            raise RuntimeError("disk full")
    got = tracker.client.get_run(run.run_id)
    assert got.info.status == "FAILED"
    assert got.data.tags["pipeline.failure"] == "RuntimeError: disk full"


def test_a_failing_pipeline_run_marks_the_runs_of_its_process_left_running(tmp_path):
    """A nested run a stop signal caught between its creation and its own handler stays RUNNING;
    the pipeline's run, ending on the error, marks it FAILED with the same reason."""
    tracker = _tracker(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with tracker.run("pipeline", {}) as parent:
            orphan = tracker.client.create_run(tracker.experiment_id, run_name="trial", tags={
                **tracker._process_tags(), "mlflow.parentRunId": parent.run_id})
            other = tracker.client.create_run(tracker.experiment_id, run_name="another process's", tags={
                **tracker._process_tags(), "pipeline.pid": str(os.getpid() + 1)})
            raise KeyboardInterrupt("stopped")
    got = tracker.client.get_run(orphan.info.run_id)
    assert got.info.status == "FAILED" and got.data.tags["pipeline.failure"] == "KeyboardInterrupt: stopped"
    assert tracker.client.get_run(other.info.run_id).info.status == "RUNNING"
    assert tracker.client.get_run(parent.run_id).info.status == "FAILED"


def test_a_failure_is_recorded_even_when_the_client_broke_mid_write(tmp_path, monkeypatch):
    tracker = _tracker(tmp_path)
    broken = tracker.client

    def refuse(*args, **kwargs):
        raise RuntimeError("This Session's transaction has been rolled back")

    with pytest.raises(KeyboardInterrupt):
        with tracker.run("trial", {}) as run:
            monkeypatch.setattr(broken, "set_tag", refuse)
            monkeypatch.setattr(broken, "log_batch", refuse)
            raise KeyboardInterrupt("stopped")
    monkeypatch.undo()
    got = broken.get_run(run.run_id)
    assert got.info.status == "FAILED" and got.data.tags["pipeline.failure"] == "KeyboardInterrupt: stopped"


def test_nested_runs_point_to_their_parent(tmp_path):
    tracker = _tracker(tmp_path)
    with tracker.run("parent", {}) as parent:
        with tracker.run("child", {"x": "1"}, parent=parent.run_id) as child:
            child.log_metrics({"loss": 0.5}, step=3)
    got = tracker.client.get_run(child.run_id)
    assert got.data.tags["mlflow.parentRunId"] == parent.run_id
    assert tracker.client.get_metric_history(child.run_id, "loss")[0].step == 3


def test_runs_of_dead_processes_are_marked_failed_and_live_ones_are_not(tmp_path):
    tracker = _tracker(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    from pipeline.tracking import _process_start_time

    stale = tracker.client.create_run(tracker.experiment_id, tags={
        "pipeline.host": tracker.host, "pipeline.pid": str(dead.pid), "pipeline.pid_start": "1"})
    alive = tracker.client.create_run(tracker.experiment_id, tags={
        "pipeline.host": tracker.host, "pipeline.pid": str(os.getpid()),
        "pipeline.pid_start": _process_start_time(os.getpid())})
    other_host = tracker.client.create_run(tracker.experiment_id, tags={
        "pipeline.host": "elsewhere", "pipeline.pid": "1", "pipeline.pid_start": "0"})
    assert tracker.fail_stale_runs() == [stale.info.run_id]
    assert tracker.client.get_run(stale.info.run_id).info.status == "FAILED"
    assert tracker.client.get_run(alive.info.run_id).info.status == "RUNNING"
    assert tracker.client.get_run(other_host.info.run_id).info.status == "RUNNING"


def test_pipeline_run_records_what_reproduces_it(tmp_path):
    tracker = _tracker(tmp_path)
    config = load_config(DEFAULT_CONFIG, ["train.lr=0.001"])
    with tracker.pipeline_run(config, "configs/default.yaml", {"train_diffusion[p_uncond=0.1]": "abc"}) as run:
        run.log_config(config)
    got = tracker.client.get_run(run.run_id)
    tags, params = got.data.tags, got.data.params
    assert tags["pipeline.config_hash"] == config.hash()
    assert len(tags["pipeline.git_commit"]) in (40, len("unknown"))
    assert tags["store.key.train_diffusion:p_uncond:0.1"] == "abc"
    assert tags["version.mlflow"] != "not installed"
    assert params["train.lr"] == "0.001" and params["train.p_uncond"] == "[0.1, 0.2]"
    artifacts = [a.path for a in tracker.client.list_artifacts(run.run_id)]
    assert "config.yaml" in artifacts


def test_safe_key():
    assert safe_key("train_diffusion[p_uncond=0.1]") == "train_diffusion:p_uncond:0.1"
    assert safe_key("a.b-c/d e") == "a.b-c/d e"


def test_the_experiment_is_a_model_training_experiment(tmp_path):
    """MLflow 3.x names an experiment's kind in a tag; without it the UI takes it for a GenAI one."""
    from pipeline.tracking import EXPERIMENT_KIND_TAG, MODEL_TRAINING

    tracker = _tracker(tmp_path)
    assert tracker.client.get_experiment(tracker.experiment_id).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    for name, kind in (("older", None), ("genai", "genai_development")):
        exp = tracker.client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: kind} if kind else None)
        Tracker(TrackingConfig(uri=uri, artifact_location=str(tmp_path / "art"), experiment=name))
        # an experiment made before this existed is marked; one that names its kind keeps it
        assert tracker.client.get_experiment(exp).tags[EXPERIMENT_KIND_TAG] == (kind or MODEL_TRAINING)


def test_ui_links_open_the_model_training_view(tmp_path):
    tracker = _tracker(tmp_path)
    exp = tracker.experiment_id
    assert tracker.ui_url("http://127.0.0.1:5000/") == \
        f"http://127.0.0.1:5000/#/experiments/{exp}/runs?workflowType=machine_learning"
    assert tracker.ui_url("http://h:1", "abc") == f"http://h:1/#/experiments/{exp}/runs/abc?workflowType=machine_learning"
    assert tracker.ui_path("abc", "plots/a.png") == \
        f"#/experiments/{exp}/runs/abc/artifacts/plots/a.png?workflowType=machine_learning"


def test_a_store_output_is_logged_as_a_dataset_input_with_its_content_digest(tmp_path):
    from pipeline.store import Store
    from pipeline.tracking import manifest_digest

    store = Store(str(tmp_path / "runs"))

    def publish(key: str, shard: bytes):
        partial = store.begin("shard", key)
        partial.write_bytes("train-000000.tar", shard)
        partial.write_json("dataset.json", {"source": "digits", "resolution": 8, "num_classes": 10})
        return store.publish("shard", key, {"label": "shard"})

    first, same, other = publish("k1", b"a" * 10), publish("k2", b"a" * 10), publish("k3", b"b" * 10)
    assert manifest_digest(first.manifest) == manifest_digest(same.manifest) != manifest_digest(other.manifest)

    tracker = _tracker(tmp_path)
    with tracker.run("train", {}) as run:
        run.log_dataset(first)
    [logged] = tracker.client.get_run(run.run_id).inputs.dataset_inputs
    assert logged.dataset.name == "digits-8px"
    assert logged.dataset.digest == manifest_digest(first.manifest)[:16]
    assert json.loads(logged.dataset.source) == {"uri": first.uri} and logged.dataset.source_type == "local"
    assert json.loads(logged.dataset.profile)["store_key"] == "k1"
    assert {(t.key, t.value) for t in logged.tags} == {("mlflow.data.context", "training")}
