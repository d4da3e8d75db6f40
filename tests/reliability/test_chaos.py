"""A chaos run: the reduced pipeline (real shard, training, reference statistics, sampling and
sweep) while a killer removes a running Ray worker process at intervals, as Ray's own chaos tests
do with their worker killer. The run must finish with exactly the outputs and metrics of an
undisturbed run.

The killer asks the run's Ray instance (its State API, at the dashboard address the driver
prints) which units of work it runs and kills one by the PID Ray reports for it, once per kind (a
shard task, a training worker, a sampler actor, a sweep trial): the units the pipeline promises to
survive losing. Coordinators (Ray Train's controller, the driver) are never targets."""
from __future__ import annotations

import json
import os
import random
import re
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.reliability.conftest import descendants, mlflow_runs

pytestmark = pytest.mark.slow

TASKS = {"shard task": "_write_shard_task"}  # kind -> name of a running task (State API)
ACTORS = {"training worker": "RayTrainWorker", "sampler actor": "ChunkWorker",  # kind -> actor class
          "sweep trial": "ImplicitFunc"}  # (Tune's is wrap_function.<locals>.ImplicitFunc)
POLL = 0.5  # seconds between looks at what runs
BUSY = 1.0  # an actor alive this long is at work, no longer starting
QUALITY = ["fd_evalnet", "kid_evalnet_mean", "kid_evalnet_std", "is_evalnet", "is_evalnet_std", "precision_evalnet",
           "recall_evalnet", "class_accuracy", "num_images", "protocol", "config_id", "fidelity"]


class WorkerKiller(threading.Thread):
    """Kills units of work of the run whose driver prints its dashboard address: a running shard
    task, or an actor (training worker, sampler, sweep trial) alive for at least BUSY seconds (so
    at work, not starting), each kind once, chosen at random among those present."""

    def __init__(self, driver):
        super().__init__(daemon=True)
        self.driver = driver
        self.dashboard = None
        self.rng = random.Random(0)
        self.killed: dict[str, int] = {}   # kind -> pid
        self.seen: set[str] = set()
        self.first_seen: dict[str, float] = {}  # actor id -> when
        self.error = ""
        self.stopped = threading.Event()

    def units(self) -> list[tuple[str, int, str]]:
        """(kind, pid, id) of every unit of work Ray reports now."""
        from ray.util.state import list_actors, list_tasks

        if self.dashboard is None:
            found = re.search(r"dashboard (http://[\d.]+:\d+)", self.driver.output)
            if not found:
                return []
            self.dashboard = found.group(1)
        options = dict(address=self.dashboard, detail=True, limit=1000, timeout=10, raise_on_missing_output=False)
        try:
            tasks = list_tasks(filters=[("state", "=", "RUNNING")], **options)
            actors = list_actors(filters=[("state", "=", "ALIVE")], **options)
        except Exception as error:  # the State API lags or the instance is busy: look again
            self.error = f"{type(error).__name__}: {error}"
            return []
        now, found = time.time(), []
        for task in tasks:
            self.seen.add(task.name)
            kind = next((k for k, name in TASKS.items() if task.name.startswith(name)), None)
            if kind and task.worker_pid:
                found.append((kind, task.worker_pid, task.task_id))
        for actor in actors:
            self.seen.add(actor.class_name)
            kind = next((k for k, name in ACTORS.items() if actor.class_name.rsplit(".", 1)[-1] == name), None)
            if kind and actor.pid and now - self.first_seen.setdefault(actor.actor_id, now) >= BUSY:
                found.append((kind, actor.pid, actor.actor_id))
        return found

    def run(self) -> None:
        while not self.stopped.wait(POLL):
            units = [u for u in self.units() if u[0] not in self.killed]
            # only workers of this run's own instance (all below its driver), never the driver itself
            ours = descendants(self.driver.proc.pid) - {self.driver.proc.pid} if units else set()
            candidates = [u for u in units if u[1] in ours]
            if candidates:
                kind, pid, _ = self.rng.choice(candidates)
                try:
                    os.kill(pid, signal.SIGKILL)
                    self.killed[kind] = pid
                except ProcessLookupError:
                    pass


# Files that rightly differ between two runs: timings (a trial's row also records its images/s),
# the store location, MLflow run ids, where each unit ran (node, pid, seconds: units/*.json, and
# the parts listed in reference.json). The metrics in them are compared through trials.parquet,
# the statistics through stats_*.npz, the images through chunk_*.npz.
VARYING = ("mlflow/", "results/", "trials.parquet", "samples.json", "units/", "reference.json")


def published(root: Path) -> dict[str, dict]:
    """stage -> {file: sha256} of every published output, but for VARYING files."""
    found = {}
    for manifest in (root / "runs").glob("*/*/_MANIFEST.json"):
        if manifest.parent.name.startswith("_"):
            continue
        data = json.loads(manifest.read_text())
        found[data["stage"]] = {f["path"]: f["sha256"] for f in data["files"] if not f["path"].startswith(VARYING)}
    return found


def trials(root: Path) -> pd.DataFrame:
    [path] = list((root / "runs/sweep").glob("*/trials.parquet"))
    return pd.read_parquet(path)[QUALITY].sort_values(["fidelity", "config_id"]).reset_index(drop=True)


@pytest.fixture
def state_api_with_token():
    """This process's State API client sends the local token (~/.ray/auth_token), which the runs'
    instances ask for. Ray reads RAY_AUTH_MODE once per process and caches it (an earlier test may
    have read it unset), so its config is read again after the change, and again once undone."""
    from ray._raylet import Config

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_AUTH_MODE", "token")
        Config.initialize("")
        yield
    Config.initialize("")


def test_killing_workers_changes_nothing_in_the_results(tmp_path, drivers, state_api_with_token):
    """Both runs on a private local instance of their own, its dashboard on (for the State API)."""
    args = ("--set", "cluster.include_dashboard=true", "--set", "evalnet.kimg=1.2", "--set", "sample.num_images=60",
            "--set", "sample.chunk_size=10", "--set", "sample.batch_size=10")
    calm_root, chaos_root = tmp_path / "calm", tmp_path / "chaos"
    calm_root.mkdir(), chaos_root.mkdir()

    calm = drivers(calm_root, "chaos", *args)
    assert calm.wait() == 0, calm.output[-4000:]

    chaos = drivers(chaos_root, "chaos", *args)
    killer = WorkerKiller(chaos)
    killer.start()
    try:
        status = chaos.wait()
    finally:
        killer.stopped.set()
        killer.join(30)
    assert status == 0, chaos.output[-4000:]
    # the trials never take the CPU a killed sampler actor's replacement needs (once they did: a hang)
    assert "sweep: at most 1 trial at once" in chaos.output
    print(f"killed: {killer.killed}; running tasks seen: {sorted(killer.seen)}")
    assert len(killer.killed) >= 2, (f"killed {killer.killed}; running tasks seen: {sorted(killer.seen)}; "
                                     f"last State API error: {killer.error}")

    assert published(chaos_root) == published(calm_root)
    pd.testing.assert_frame_equal(trials(chaos_root), trials(calm_root))
    assert {r.info.status for r in mlflow_runs(chaos_root)} == {"FINISHED"}
