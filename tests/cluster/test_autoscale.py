"""The proof on Ray's own autoscaling test cluster (issue 11 item 6): a head with CPUs only, a
worker type with one CPU and one (fake) GPU, `min_workers: 0`. Work that asks for GPUs makes the
autoscaler add GPU nodes from zero, and runs there. See tests/cluster/fake_cluster.py."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cluster.fake_cluster import HEAD_TYPE, REPO, FakeCluster, WorkerType

GPU_TYPE = "gpu_worker"

pytestmark = pytest.mark.slow


@pytest.fixture
def gpu_cluster():
    cluster = FakeCluster(head_resources={"CPU": 2},
                          workers=[WorkerType(GPU_TYPE, {"CPU": 1, "GPU": 1}, min_workers=0, max_workers=2)],
                          idle_timeout_minutes=1.0)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def alive(nodes: list[dict]) -> list[dict]:
    return [n for n in nodes if n["Alive"]]


def test_two_gpu_tasks_scale_two_gpu_nodes_up_from_zero(gpu_cluster):
    before = gpu_cluster.started_with
    assert [n["node_type"] for n in alive(before)] == [HEAD_TYPE], before
    assert not any(n["Resources"].get("GPU") for n in before)

    started = time.monotonic()
    result = gpu_cluster.run_driver("tests.cluster.gpu_tasks", "2", timeout=300)
    print(f"two GPU tasks placed after {result['seconds']:.1f} s ({time.monotonic() - started:.1f} s with the driver)")

    placed = result["placed"]
    assert len({p["node_id"] for p in placed}) == 2, gpu_cluster.logs()  # they held a GPU at once
    assert {p["node_type"] for p in placed} == {GPU_TYPE}
    assert all(p["gpu_ids"] == ["0"] for p in placed)  # each node's one GPU
    after = {n["NodeID"]: n for n in gpu_cluster.nodes()}
    for p in placed:
        node = after[p["node_id"]]
        assert node["Alive"] and node["Resources"]["GPU"] == 1 and node["Resources"]["CPU"] == 1
        assert node["node_type"] == GPU_TYPE


# ----------------------------------------------------------------------------------------------
# The whole pipeline

TINY = REPO / "tests" / "sweep_stages" / "tiny.yaml"
# every unit that can ask for a GPU does; the fake GPUs have no CUDA behind them
ON_GPUS = ["--set", "train.use_gpu=true", "--set", "classifier.use_gpu=true", "--set", "evalnet.use_gpu=true",
           "--set", "sample.use_gpu=true", "--set", "eval.use_gpu=true", "--set", "sweep.use_gpu=true",
           "--set", "cluster.require_cuda=false"]
# a sweep of one configuration, screened only (CI time), in 6 chunks on a pool of two GPU actors
ONE_CONFIGURATION = ["--set", "sweep.guidance={cfg: [1.0]}", "--set", "sweep.full_images=12",
                     "--set", "sweep.chunk_size=2", "--set", "sweep.num_actors=2"]
GPU_STAGES = ("train_diffusion", "train_diffusion.guide", "train_classifier", "train_evalnet", "sample",
              "reference_stats", "evaluate", "sweep")


def units_by_stage(store_root: Path, nodes: list[dict]) -> dict[str, list[dict]]:
    """Where each recorded unit of work of the run in `store_root` ran: {stage: [{node_id, node_type}, ...]}.

    Reads what the stages record: every list of {node_id, node_type, ...} records in an output's
    summary under a key `units` (the stage's units, e.g. the training workers) or `<role>_units`
    (filed as `<stage>.<role>`, e.g. train_diffusion.guide); the records of the chunks and feature
    tasks of the sweep's trials (trials.parquet's `sample_units` / `feature_units`: the trials
    themselves only coordinate); and the `units` of metrics.json / reference.json (evaluate's and
    reference_stats' feature tasks). A record without a node type gets the one that
    `nodes` (FakeCluster.nodes(), dead nodes included) gives its node."""
    import pandas as pd

    types = {n["NodeID"]: n["node_type"] for n in nodes}
    found: dict[str, list[dict]] = {}
    for manifest in sorted(store_root.glob("*/*/_MANIFEST.json")):
        stage = manifest.parent.parent.name
        summary = json.loads(manifest.read_text()).get("summary") or {}
        for key, records in summary.items():
            if key == "units" or key.endswith("_units"):
                name = stage if key == "units" else f"{stage}.{key.removesuffix('_units')}"
                found.setdefault(name, []).extend(records)
        for record_file in ("metrics.json", "reference.json"):  # the feature tasks of evaluate, reference_stats
            if (manifest.parent / record_file).is_file() and "units" not in summary:
                found.setdefault(stage, []).extend(json.loads((manifest.parent / record_file).read_text())
                                                   .get("units") or [])
        if (manifest.parent / "trials.parquet").is_file():  # a trial's chunks and feature tasks, on the pool
            rows = pd.read_parquet(manifest.parent / "trials.parquet")
            for column in ("sample_units", "feature_units"):
                for cell in rows[column]:
                    found.setdefault(stage, []).extend(json.loads(cell or "[]"))
    return {stage: [{"node_id": r["node_id"], "node_type": r.get("node_type") or types.get(r["node_id"], "?")}
                    for r in records] for stage, records in found.items()}


def run_logged(command: list[str], cwd: Path, env: dict, timeout: float) -> tuple[int, str]:
    """Run `command` in its own process group with its output in cwd/pipeline.log; on timeout kill
    the group and fail with the log's end."""
    import os
    import signal

    log = cwd / "pipeline.log"
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise AssertionError(f"the pipeline did not finish in {timeout:g} s:\n{log.read_text()[-8000:]}") from None
    return process.returncode, log.read_text()


def stage_tags(tracking_uri: str) -> dict[str, dict[str, str]]:
    """The MLflow tags of each stage's run, by stage label."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    return {r.info.run_name: r.data.tags for r in runs if "pipeline.stage" in r.data.tags}


def test_the_pipeline_with_every_unit_on_gpus_scales_gpu_nodes_up_from_zero(gpu_cluster, tmp_path):
    before = gpu_cluster.started_with
    assert [n["node_type"] for n in alive(before)] == [HEAD_TYPE]

    store, tracking = tmp_path / "runs", f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = [sys.executable, "-m", "pipeline.run", "--config", str(TINY), *ON_GPUS, *ONE_CONFIGURATION,
               "--set", f"store.root={store}", "--set", f"tracking.uri={tracking}",
               "--set", f"tracking.artifact_location={tmp_path / 'mlruns'}"]
    started = time.monotonic()
    returncode, log = run_logged(command, tmp_path, gpu_cluster.driver_env(), timeout=720)
    print(f"the pipeline took {time.monotonic() - started:.0f} s on the fake cluster:",
          *[line for line in log.splitlines() if ": done in " in line], sep="\n  ")
    assert returncode == 0, log[-8000:] + gpu_cluster.logs()
    assert "ray: 1 node(s), 2 CPU, 0 GPU" in log  # it joined the fake cluster, with no GPU node yet
    assert "cluster.require_cuda is false: computing on CPU" in log
    assert list(store.glob("leaderboard/*/leaderboard.md"))

    nodes = gpu_cluster.nodes()  # with the nodes the autoscaler has removed since (their labels stay)
    gpu_nodes = {n["NodeID"] for n in nodes if n["node_type"] == GPU_TYPE}
    assert gpu_nodes, nodes  # it scaled up from zero
    assert all(n["Resources"].get("GPU") == 1 for n in alive(nodes) if n["NodeID"] in gpu_nodes)

    units = units_by_stage(store, nodes)
    assert set(GPU_STAGES) <= set(units), units
    for stage in GPU_STAGES:
        assert units[stage] and {u["node_type"] for u in units[stage]} == {GPU_TYPE}, (stage, units[stage])
        assert {u["node_id"] for u in units[stage]} <= gpu_nodes
    assert len({u["node_id"] for u in units["sweep"]}) == 2, units["sweep"]  # one configuration, two GPU workers
    print("GPU nodes per stage:", {stage: len({u["node_id"] for u in records}) for stage, records in units.items()})

    tags = stage_tags(tracking)
    for label in ("train_diffusion[p_uncond=0.2]", "train_classifier", "train_evalnet"):
        assert tags[label]["node_types"] == GPU_TYPE and set(tags[label]["node_ids"].split(",")) <= gpu_nodes
    assert tags["train_diffusion[p_uncond=0.2]"]["guide.node_types"] == GPU_TYPE
