"""Helpers of the reliability suite: the pipeline in a process of its own (to signal, kill or race
it), a store built once per module and copied into each test, MLflow's view of the runs."""
from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.reliability.drive import arguments, graph


class Driver:
    """`python -m tests.reliability.drive ROOT GRAPH ARGS` in its own session; output in a file."""

    def __init__(self, root: Path, name: str, *args: str, env: dict | None = None):
        self.root = root
        self.log = root / f"driver-{time.monotonic_ns()}.log"
        full_env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **(env or {})}
        full_env.pop("RAY_ADDRESS", None)
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "tests.reliability.drive", str(root), name, *args],
                                         cwd=root, env=full_env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    @property
    def output(self) -> str:
        return self.log.read_text()

    def wait_for(self, pattern: str, timeout: float = 300) -> None:
        """Until a file matching `pattern` (a glob under root) exists; fails if the run ends first."""
        deadline = time.time() + timeout
        while not glob.glob(str(self.root / pattern)):
            if self.proc.poll() is not None:
                raise AssertionError(f"the run ended ({self.proc.returncode}) before {pattern} appeared:\n"
                                     + self.output[-4000:])
            if time.time() > deadline:
                raise AssertionError(f"{pattern} did not appear within {timeout:g}s:\n" + self.output[-4000:])
            time.sleep(0.1)

    def wait_for_line(self, text: str, timeout: float = 300) -> None:
        deadline = time.time() + timeout
        while text not in self.output:
            if self.proc.poll() is not None or time.time() > deadline:
                raise AssertionError(f"no line with {text!r}:\n" + self.output[-4000:])
            time.sleep(0.1)

    def signal(self, signum: int, timeout: float = 120) -> tuple[int, float]:
        """Send `signum`; returns (exit status, seconds until the process was gone)."""
        sent = time.time()
        self.proc.send_signal(signum)
        status = self.proc.wait(timeout)
        return status, time.time() - sent

    def wait(self, timeout: float = 600) -> int:
        return self.proc.wait(timeout)

    def group_alive(self) -> bool:
        """Whether any process of the run's session is still there (its Ray instance included)."""
        try:
            os.killpg(self.proc.pid, 0)
            return True
        except ProcessLookupError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        if self.group_alive():
            os.killpg(self.proc.pid, signal.SIGKILL)


@pytest.fixture
def drivers():
    """Start drivers with `drivers(root, graph, *args)`; every one is stopped at the end."""
    started: list[Driver] = []

    def start(root: Path, name: str, *args: str, env: dict | None = None) -> Driver:
        started.append(Driver(root, name, *args, env=env))
        return started[-1]

    yield start
    for driver in started:
        driver.stop()


def run_here(root: Path, name: str, *args: str) -> int:
    """The pipeline in this process (on the test session's Ray instance)."""
    from pipeline.run import main

    return main(arguments(root, *args), stage_modules=graph(name))


def mlflow_runs(root: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("guided-diffusion")
    return client.search_runs([experiment.experiment_id], max_results=1000) if experiment else []


@pytest.fixture(scope="module")
def built(tmp_path_factory, ray_local):
    """A store with the `fast` graph's shard, stand-in trainings and reference statistics, built once
    per module; tests take a copy with `copy_of(built, tmp_path)`."""
    root = tmp_path_factory.mktemp("built")
    code = run_here(root, "fast", "--stages", "reference_stats,train_diffusion,train_classifier")
    assert code == 0
    return root


def copy_of(template: Path, target: Path) -> Path:
    for name in ("runs", "mlflow.db", "mlruns"):
        source = template / name
        if source.is_dir():
            shutil.copytree(source, target / name)
        elif source.exists():
            shutil.copy2(source, target / name)
    return target



def descendants(root_pid: int) -> set[int]:
    """`root_pid` and every process below it (from /proc): a private Ray instance is all in there."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = set(), {root_pid}
    while frontier:
        found |= frontier
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
    return found
