"""The sweep and leaderboard stages through the real runner on tiny random-weight models
(tests/sweep_stages): trials, the two fidelity rounds, nested MLflow runs, the leaderboard's
files and MLflow artifacts, cache hits, resume after a killed driver, a two-node cluster."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.sweep_stages import MODULES
from tests.sweep_stages.drive import TINY

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

SCREEN_CONFIGS = 6  # tiny.yaml: none, cfg w=1, cfg w=3, classifier s=2, autoguidance w=1, pag w=1
KINDS = {"none", "cfg", "classifier", "autoguidance", "pag"}


def published(root: Path, stage: str) -> Path:
    outs = [p for p in (root / "runs" / stage).iterdir() if (p / "_MANIFEST.json").exists()]
    assert len(outs) == 1, outs
    return outs[0]


def trials_of(root: Path) -> pd.DataFrame:
    return pd.read_parquet(published(root, "sweep") / "trials.parquet")


def check_trials(trials: pd.DataFrame, sweep_dir: Path) -> None:
    screen = trials[trials["fidelity"] == "screen"]
    full = trials[trials["fidelity"] == "full"]
    assert len(screen) == SCREEN_CONFIGS and set(screen["num_images"]) == {12}
    assert set(screen["guidance"]) == KINDS
    # the full round re-evaluates the best screened configuration of each kind (top_k = 1) at N = 24
    assert len(full) == len(KINDS) and set(full["num_images"]) == {24}
    for kind, rows in screen.groupby("guidance"):
        best = rows.sort_values(["fd_evalnet", "config_id"]).iloc[0]["config_id"]
        assert list(full[full["guidance"] == kind]["config_id"]) == [best]
    assert screen["fd_evalnet"].notna().all() and full["fd_evalnet"].notna().all()
    assert screen["protocol"].nunique() == 1 and full["protocol"].nunique() == 1
    assert set(screen["protocol"]).isdisjoint(full["protocol"])  # N is part of the protocol
    cfg = trials[trials["guidance"] == "cfg"]
    assert (cfg["s"] == cfg["w"] + 1).all()
    cls = trials[trials["guidance"] == "classifier"]
    assert cls["w"].isna().all() and (cls["s"] == 2.0).all()
    assert (trials[trials["guidance"] == "none"]["nfe"] < cfg["nfe"].min()).all()
    for rel in trials["grid"]:
        assert (sweep_dir / rel).read_bytes().startswith(b"\x89PNG")
    assert not (sweep_dir / "tune").exists() and not (sweep_dir / "samples").exists()


def test_sweep_and_leaderboard_through_the_runner(run_pipeline, workdir, capsys):
    from mlflow.tracking import MlflowClient

    assert run_pipeline("--config", str(TINY), stage_modules=MODULES) == 0
    sweep_dir = published(workdir, "sweep")
    trials = trials_of(workdir)
    check_trials(trials, sweep_dir)

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("guided-diffusion")
    stage_runs = {r.data.tags.get("pipeline.stage"): r for r in client.search_runs([exp.experiment_id])
                  if r.data.tags.get("pipeline.kind") != "sweep_trial"}
    trial_runs = client.search_runs([exp.experiment_id], "tags.`pipeline.kind` = 'sweep_trial'")
    assert len(trial_runs) == len(trials)
    assert {r.data.tags["mlflow.parentRunId"] for r in trial_runs} == {stage_runs["sweep"].info.run_id}
    assert {r.info.run_id for r in trial_runs} == set(trials["mlflow_run_id"])
    assert all(r.info.status == "FINISHED" and "fd_evalnet" in r.data.metrics for r in trial_runs)

    # where every chunk and feature task ran: in the trials' rows and on their runs and the stage's
    from pipeline.generation import plan_chunks

    chunks = {}
    for _, row in trials.iterrows():
        made, features = json.loads(row["sample_units"]), json.loads(row["feature_units"])
        # tiny.yaml: chunks of 8, the full round's after the screening round's 12 images
        assert [u["chunk"] for u in made] == [p.name for p in plan_chunks(row["num_images"], 8, prefix=12)]
        assert features
        assert all(u["node_id"] and "node_type" in u and u["device"] == "cpu" for u in made + features)
        chunks.update({(row["config_id"], u["chunk"]): u for u in made})
    for run in trial_runs:
        assert all(run.data.tags[f"units.{k}"] for k in ("node_id", "sample_nodes", "sample_node_types",
                                                          "feature_nodes", "feature_node_types"))
    sweep_tags = stage_runs["sweep"].data.tags
    assert sum(json.loads(sweep_tags["units.chunks.nodes"]).values()) == len(chunks)
    assert sum(json.loads(sweep_tags["units.chunks.node_types"]).values()) == len(chunks)
    assert json.loads(sweep_tags["units.features.nodes"])

    board = published(workdir, "leaderboard")
    for name in ("leaderboard.parquet", "leaderboard.md", "leaderboard.html"):
        assert (board / name).stat().st_size > 0
    ranked = pd.read_parquet(board / "leaderboard.parquet")
    assert len(ranked) == len(trials) and ranked["rank"].notna().all()
    plots = sorted(p.name for p in (board / "plots").iterdir())
    assert any(p.endswith("tradeoff_fd_evalnet.png") for p in plots)
    assert any(p.endswith("frontier_precision_recall_evalnet.png") for p in plots)
    assert len(list((board / "grids").iterdir())) == SCREEN_CONFIGS
    lb_run = stage_runs["leaderboard"].info.run_id
    artifacts = {a.path for a in client.list_artifacts(lb_run)}
    assert {"leaderboard.html", "leaderboard.md", "leaderboard.parquet", "leaderboard_table.json", "plots",
            "grids"} <= artifacts
    assert "best.fd_evalnet" in client.get_run(lb_run).data.metrics

    # python -m pipeline.leaderboard prints the same ranking from MLflow
    from pipeline import leaderboard

    capsys.readouterr()
    assert leaderboard.main(["--tracking-uri", f"sqlite:///{workdir / 'mlflow.db'}", "--format", "csv"]) == 0
    printed = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert len(printed) == len(trials)

    # a second run is all cache hits
    t0 = time.time()
    assert run_pipeline("--config", str(TINY), stage_modules=MODULES) == 0
    assert "(0 to run" in capsys.readouterr().out and time.time() - t0 < 30


def _drive(root: Path, *args: str, timeout: float = 300) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
           "RAY_DEDUP_LOGS": "0", "TQDM_DISABLE": "1"}
    log = open(root / f"drive-{time.time_ns()}.log", "w")
    return subprocess.Popen([sys.executable, "-m", "tests.sweep_stages.drive", str(root), *args], cwd=root,
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait(proc: subprocess.Popen, root: Path, timeout: float = 300) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("the pipeline did not finish:\n" + "\n".join(
            p.read_text()[-3000:] for p in sorted(root.glob("drive-*.log"))))


def _logs(root: Path) -> str:
    return "\n".join(p.read_text()[-4000:] for p in sorted(root.glob("drive-*.log")))


def test_a_sweep_on_a_two_node_cluster_killed_and_resumed_repeats_no_finished_trial(tmp_path):
    """Two birds, one pipeline run less: the driver (and its simulated two-node cluster) is
    SIGKILLed mid-sweep; the same command on a new two-node cluster finishes the sweep."""
    # screening only (full = screen N); the sweep section is the cache key: the same for both runs.
    # Nodes have one CPU each; the pool's two sampler actors (spread: one per node) and up to two
    # trials take half a CPU each, so every trial's chunks are made on both nodes.
    same = ("--two-nodes", "--set", "sweep.full_images=12", "--set", "sweep.max_concurrent=2",
            "--set", "sweep.num_actors=2", "--set", "sweep.cpus_per_actor=0.5", "--set", "sweep.cpus_per_trial=0.5")
    proc = _drive(tmp_path, *same)
    partial = None
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        found = list((tmp_path / "runs" / "sweep").glob("*.partial/results/screen/*.json"))
        if len(found) >= 2:
            partial = found[0].parent.parent.parent
            break
        time.sleep(0.05)
    assert partial is not None, "no trial finished before the deadline:\n" + _logs(tmp_path)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver, its Ray cluster and trials: everything it started
    proc.wait(30)
    before = {p.relative_to(partial): (p.stat().st_mtime_ns, p.read_bytes())
              for p in (partial / "results").rglob("*.json")}
    assert 2 <= len(before) <= SCREEN_CONFIGS - 2, "the kill came too late to leave two trials for the resume"

    assert _wait(_drive(tmp_path, *same), tmp_path) == 0, _logs(tmp_path)
    sweep_dir = published(tmp_path, "sweep")
    for rel, (mtime, data) in before.items():  # finished trials were not run again
        assert (sweep_dir / rel).stat().st_mtime_ns == mtime and (sweep_dir / rel).read_bytes() == data
    manifest = json.loads((sweep_dir / "_MANIFEST.json").read_text())
    assert manifest["summary"]["resumed_trials"] == len(before)
    trials = trials_of(tmp_path)
    assert len(trials) == SCREEN_CONFIGS and trials["config_id"].is_unique and set(trials["guidance"]) == KINDS
    log = "".join(p.read_text() for p in sorted(tmp_path.glob("drive-*.log")))
    assert f"{len(before)} finished before, {SCREEN_CONFIGS - len(before)} to run" in log
    assert log.count("ray: 2 node(s)") == 2
    resumed = trials[~trials["config_id"].isin({Path(rel).stem for rel in before})]
    # A trial only coordinates: Tune hands the next trial to a free trial actor (reuse_actors) rather
    # than wait for a second one to start, so short trials may all run on one node. Their work, the
    # pool's chunks, must run on both nodes of the second cluster.
    chunk_nodes = {node for nodes in resumed["sample_nodes"] for node in json.loads(nodes)}
    assert len(chunk_nodes) == 2, "the pool did not make chunks on both nodes of the second cluster"
    assert set(resumed["node_id"]) <= chunk_nodes, "a resumed trial ran outside the second cluster"


def test_a_trial_larger_than_the_local_instance_fails_at_once(ray_local):
    from types import SimpleNamespace

    from pipeline.config import load_config
    from stages.sweep import _check_resources

    said = []
    ctx = SimpleNamespace(log=said.append)
    _check_resources(ctx, load_config(None, ["sweep.cpus_per_trial=1"]))
    with pytest.raises(RuntimeError, match="no trial could ever start"):
        _check_resources(ctx, load_config(None, ["sweep.cpus_per_trial=64"]))
    # a cluster may autoscale: it waits, saying for what
    _check_resources(ctx, load_config(None, ["sweep.cpus_per_trial=64", "cluster.address=auto"]))
    assert said and "autoscaler" in said[-1]
