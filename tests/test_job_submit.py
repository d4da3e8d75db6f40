"""`ray job submit --working-dir . -- python -m pipeline.run --config <tiny config>` against a local
Ray head that the test starts (and stops: only the `ray start --block` process it started, by pid,
and that process's group): the whole product, from digits to the leaderboard, through the path a
cluster user takes.

It needs every stage built; until then it is skipped with the names of the unbuilt stages."""
from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TINY = "tests/sweep_stages/tiny.yaml"
RAY = str(Path(sys.executable).with_name("ray"))
UNBUILT = sorted(p.stem for p in (REPO / "stages").glob("*.py")
                 if 'raise NotImplementedError("not implemented yet' in p.read_text())

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(bool(UNBUILT), reason=f"needs every stage; not built yet: {', '.join(UNBUILT)}")]


def _env() -> dict:
    """Ray's token authentication with a token made for this test (head and client share it), and
    this interpreter's bin directory first on PATH, as an activated venv would have it: the job's
    entrypoint `python` resolves on the head through PATH (CI runs `.venv/bin/python -m pytest`
    without activating the venv)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
    path = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return {**env, "PATH": path, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN}


TOKEN = secrets.token_hex(16)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head():
    """A Ray head on free ports, in a short temp dir (AF_UNIX paths are limited), dashboard on loopback."""
    temp = tempfile.mkdtemp(prefix="rj", dir="/tmp")
    port, dashboard, agent, client = (_free_port() for _ in range(4))
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", f"--port={port}", "--num-cpus=2", "--include-dashboard=true",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--temp-dir={temp}",
         # every fixed default port on free ones: other Ray instances may run on this machine
         f"--dashboard-agent-listen-port={agent}", f"--ray-client-server-port={client}",
         "--disable-usage-stats"],
        cwd=temp, env=_env(), stdout=open(Path(temp) / "head.log", "w"), stderr=subprocess.STDOUT,
        start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"{address}/", timeout=2).read()
            break
        except OSError:
            if head.poll() is not None or time.time() > deadline:
                _stop(head)
                raise AssertionError("the Ray head did not come up:\n" + (Path(temp) / "head.log").read_text()[-3000:])
            time.sleep(1)
    try:
        yield address, Path(temp)
    finally:
        _stop(head)


def _stop(head: subprocess.Popen) -> None:
    """`ray start --block` stops the processes it started on SIGTERM; its group is killed after that."""
    if head.poll() is None:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(head.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_ray_job_submit_runs_the_pipeline_to_a_leaderboard(ray_head):
    address, temp = ray_head
    root = temp / "work"
    root.mkdir()
    cmd = [RAY, "job", "submit", "--address", address, "--working-dir", str(REPO), "--",
           "python", "-m", "pipeline.run", "--config", TINY,
           "--set", f"store.root={root / 'runs'}", "--set", f"tracking.uri=sqlite:///{root / 'mlflow.db'}",
           "--set", f"tracking.artifact_location={root / 'mlruns'}"]
    deadline = time.time() + 180
    while True:  # the head's job agent may come up after its dashboard
        done = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900)
        log = done.stdout + done.stderr
        if "No available agent" not in log or time.time() > deadline:
            break
        time.sleep(3)
    assert done.returncode == 0 and "succeeded" in log, log[-6000:]
    assert "ray: 1 node(s), 2 CPU" in log  # the driver joined the head we started, not a private instance
    boards = list((root / "runs" / "leaderboard").glob("*/leaderboard.md"))
    assert len(boards) == 1, log[-6000:]
    table = boards[0].read_text()
    assert "| rank | guidance |" in table and "cfg" in table and "classifier" in table
    assert list((root / "runs" / "leaderboard").glob("*/leaderboard.html"))
