"""A chaos run: the reduced pipeline (real shard, training, reference statistics, sampling and
sweep) while a killer removes a running Ray worker process at intervals, as Ray's own chaos tests
do with their worker killer. The run must finish with exactly the outputs and metrics of an
undisturbed run on the same cluster.

The killer asks Ray's State API which tasks are running and kills a worker by the PID Ray reports
for it, once per kind of unit of work (a shard task, a training worker, a sampler actor, a sweep
trial): the units the pipeline promises to survive losing. Coordinators (Ray Train's controller,
the driver) are never targets."""
from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.reliability.conftest import mlflow_runs

pytestmark = pytest.mark.slow

UNITS = {  # kind -> what a running task of that kind is called in the State API
    "shard task": "_write_shard_task",
    "training worker": "RayTrainWorker",
    "sampler actor": "SamplerWorker",
    "sweep trial": "ImplicitFunc",
}
INTERVAL = 2.0
QUALITY = ["fd_evalnet", "kid_evalnet_mean", "kid_evalnet_std", "is_evalnet", "is_evalnet_std", "precision_evalnet",
           "recall_evalnet", "class_accuracy", "num_images", "protocol", "config_id", "fidelity"]


class WorkerKiller(threading.Thread):
    def __init__(self, dashboard: str, own_pids: set[int]):
        super().__init__(daemon=True)
        self.dashboard, self.own_pids = dashboard, own_pids
        self.rng = random.Random(0)
        self.killed: dict[str, str] = {}   # kind -> task name
        self.seen: set[str] = set()
        self.stopped = threading.Event()

    def running(self) -> list:
        from ray.util.state import list_tasks

        try:
            return list_tasks(address=self.dashboard, filters=[("state", "=", "RUNNING")], detail=True,
                              limit=1000, timeout=10, raise_on_missing_output=False)
        except Exception:  # the State API lags or the run is between stages: look again
            return []

    def run(self) -> None:
        while not self.stopped.wait(INTERVAL):
            candidates = []
            for task in self.running():
                self.seen.add(task.name)
                kind = next((k for k, name in UNITS.items() if name in task.name), None)
                if kind and kind not in self.killed and task.worker_pid and task.worker_pid not in self.own_pids:
                    candidates.append((kind, task))
            if candidates:
                kind, task = self.rng.choice(candidates)
                try:
                    os.kill(task.worker_pid, signal.SIGKILL)
                    self.killed[kind] = task.name
                except ProcessLookupError:
                    pass


def published(root: Path) -> dict[str, dict]:
    """stage -> {file: sha256} of every published output (MLflow bookkeeping left out)."""
    found = {}
    for manifest in (root / "runs").glob("*/*/_MANIFEST.json"):
        if manifest.parent.name.startswith("_"):
            continue
        data = json.loads(manifest.read_text())
        found[data["stage"]] = {f["path"]: f["sha256"] for f in data["files"] if not f["path"].startswith("mlflow/")
                                and f["path"] != "trials.parquet"}
    return found


def trials(root: Path) -> pd.DataFrame:
    [path] = list((root / "runs/sweep").glob("*/trials.parquet"))
    return pd.read_parquet(path)[QUALITY].sort_values(["fidelity", "config_id"]).reset_index(drop=True)


def test_killing_workers_changes_nothing_in_the_results(ray_head, tmp_path, drivers):
    gcs, dashboard, env = ray_head
    args = ("--set", f"cluster.address={gcs}", "--set", "evalnet.kimg=1.2", "--set", "sample.num_images=60",
            "--set", "sample.chunk_size=10", "--set", "sample.batch_size=10")
    calm_root, chaos_root = tmp_path / "calm", tmp_path / "chaos"
    calm_root.mkdir(), chaos_root.mkdir()

    calm = drivers(calm_root, "chaos", *args, env=env)
    assert calm.wait() == 0, calm.output[-4000:]

    for name, value in env.items():
        os.environ.setdefault(name, value)  # the State API client authenticates with the head's token
    chaos = drivers(chaos_root, "chaos", *args, env=env)
    killer = WorkerKiller(dashboard, {os.getpid(), chaos.proc.pid})
    killer.start()
    try:
        status = chaos.wait()
    finally:
        killer.stopped.set()
        killer.join(30)
    assert status == 0, chaos.output[-4000:]
    assert len(killer.killed) >= 2, f"killed {killer.killed}; running tasks seen: {sorted(killer.seen)}"

    assert published(chaos_root) == published(calm_root)
    pd.testing.assert_frame_equal(trials(chaos_root), trials(calm_root))
    assert {r.info.status for r in mlflow_runs(chaos_root)} == {"FINISHED"}
