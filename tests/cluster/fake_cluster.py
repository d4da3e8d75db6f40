"""Ray's fake multi-node autoscaler, started for a test in its own process group and stopped by it.

`RAY_FAKE_CLUSTER=1 ray start --head --block --autoscaling-config=<file>` with the `fake_multinode`
provider: the head runs the autoscaler, which starts "nodes" of the configured types on this machine
(each a raylet with the type's resources; a GPU is a Ray resource only, there is no CUDA) when
demand cannot be placed, and removes them after `idle_timeout_minutes` idle. `provider.gcs_address`
points the new nodes at this head (else they dial port 6379, where another Ray may listen).

Never `ray stop` and never `ray.cluster_utils.AutoscalingCluster` (its start and shutdown run
`ray stop --force`, which kills every Ray instance on the machine): `stop()` kills the process group
of the `ray start` process it started, then, by pid, the processes that one started that left the
group (Ray's workers make their own).

Drivers join with `driver_env()`: RAY_ADDRESS, Ray's token authentication with a token made for
this cluster (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN; the head and the nodes it starts read the same
variables), and PYTHONPATH to this checkout, which the head's workers inherit too.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parent.parent.parent
RAY = str(Path(sys.executable).with_name("ray"))
HEAD_TYPE = "ray.head.default"  # the fake provider's name for the head's type
NODE_GROUP_LABEL = "ray.io/node-group"  # the node type Ray labels a node with (RAY_NODE_TYPE_NAME)
PROBE = "tests.cluster.probe"


@dataclass(frozen=True)
class WorkerType:
    name: str
    resources: dict[str, float]
    min_workers: int = 0
    max_workers: int = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def autoscaling_config(gcs_address: str, head_resources: dict[str, float], workers: list[WorkerType],
                       idle_timeout_minutes: float) -> dict[str, Any]:
    """The autoscaler's cluster config, in the shape of Ray's fake_multi_node/example.yaml.

    Each worker type labels its nodes with its name as `ray.io/node-group`, the label Ray derives
    from RAY_NODE_TYPE_NAME where `ray up` and KubeRay start a node: the fake provider passes that
    variable to the node's processes but resolves the node's labels in the autoscaler's own
    process, where it is not set (there it would be the head's)."""
    types = {HEAD_TYPE: {"resources": dict(head_resources), "node_config": {}, "max_workers": 0}}
    for w in workers:
        types[w.name] = {"resources": dict(w.resources), "node_config": {}, "min_workers": w.min_workers,
                         "max_workers": w.max_workers, "labels": {NODE_GROUP_LABEL: w.name}}
    return {
        "cluster_name": "fake_multinode",
        "max_workers": sum(w.max_workers for w in workers),
        "provider": {"type": "fake_multinode", "gcs_address": gcs_address, "use_node_id_as_ip": True,
                     "disable_node_updaters": True, "disable_launch_config_check": True},
        "available_node_types": types,
        "head_node_type": HEAD_TYPE,
        "auth": {}, "upscaling_speed": 1.0, "idle_timeout_minutes": idle_timeout_minutes, "docker": {},
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "rsync_exclude": [], "rsync_filter": [],
    }


def _stat(pid: int) -> Optional[tuple[str, int, str]]:
    """(state, parent pid, start time) of a process, from /proc; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # after "pid (comm)"
    except OSError:
        return None
    return fields[0], int(fields[1]), fields[19]


def _running(pid: int, start: str) -> bool:
    """Whether the process `pid` that started at `start` still runs (not reaped, not a zombie)."""
    stat = _stat(pid)
    return stat is not None and stat[2] == start and stat[0] != "Z"


def descendants(pid: int) -> dict[int, str]:
    """Every process below `pid` now: pid -> start time (so a reused pid is never mistaken for it)."""
    children: dict[int, list[tuple[int, str]]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        stat = _stat(int(entry))
        if stat:
            children.setdefault(stat[1], []).append((int(entry), stat[2]))
    found, todo = {}, [pid]
    while todo:
        for child, start in children.get(todo.pop(), []):
            found[child] = start
            todo.append(child)
    return found


@dataclass
class FakeCluster:
    """One fake autoscaling cluster: `start()`, drivers with `driver_env()`, `stop()`."""

    head_resources: dict[str, float]
    workers: list[WorkerType]
    idle_timeout_minutes: float = 0.5
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="fc", dir=_scratch())))
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    process: Optional[subprocess.Popen] = None
    address: str = ""
    started_with: list[dict[str, Any]] = field(default_factory=list)  # the nodes() it answered first with

    @property
    def log(self) -> Path:
        return self.root / "head.log"

    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
        pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        return {**env, "PYTHONPATH": pythonpath, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token,
                "RAY_DEDUP_LOGS": "0", "TQDM_DISABLE": "1"}

    def driver_env(self) -> dict[str, str]:
        return {**self._base_env(), "RAY_ADDRESS": self.address}

    def start(self, timeout: float = 120) -> "FakeCluster":
        from ray.util import get_node_ip_address

        ip = get_node_ip_address()
        port, dashboard, agent, client = (free_port() for _ in range(4))
        self.address = f"{ip}:{port}"
        config = self.root / "autoscaling.json"
        config.write_text(json.dumps(autoscaling_config(self.address, self.head_resources, self.workers,
                                                        self.idle_timeout_minutes), indent=1))
        head = dict(self.head_resources)
        command = [RAY, "start", "--head", "--block", f"--node-ip-address={ip}", f"--port={port}",
                   f"--autoscaling-config={config}", f"--temp-dir={self.root / 'ray'}",
                   f"--num-cpus={head.pop('CPU', 0):g}", f"--num-gpus={head.pop('GPU', 0):g}",
                   # every fixed default port on a free one: other Ray instances run on this machine
                   "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                   f"--dashboard-agent-listen-port={agent}", f"--ray-client-server-port={client}",
                   "--disable-usage-stats"]
        if head:
            command.append(f"--resources={json.dumps(head)}")
        env = {**self._base_env(), "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
               "RAY_NODE_TYPE_NAME": HEAD_TYPE,  # the head's node type, as `ray up` starts it
               # for every process of the cluster (they inherit it): Ray's own clients inside workers (Ray
               # Train's placement group cleaner polls the State API) find this cluster, not the newest on
               # the machine
               "RAY_ADDRESS": self.address}
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(command, cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline, error = time.time() + timeout, ""
        while True:
            try:
                self.started_with = self.nodes(timeout=60)
                return self
            except (AssertionError, subprocess.TimeoutExpired) as problem:
                error = str(problem)
            if self.process.poll() is not None or time.time() > deadline:
                self.stop()
                raise AssertionError(f"the fake cluster's head did not come up:\n{self.log.read_text()[-3000:]}"
                                     f"\n{error}")
            time.sleep(2)

    def nodes(self, timeout: float = 120) -> list[dict[str, Any]]:
        """Every node the cluster has had (alive or not): NodeID, Alive, Resources, Labels, node_type."""
        return self.run_driver(PROBE, timeout=timeout)

    def logs(self, chars: int = 3000) -> str:
        """The ends of the head's and the autoscaler's logs, for failure messages."""
        parts = [self.log, *sorted(self.root.glob("ray/session_latest/logs/monitor.*"))]
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}" for p in parts if p.is_file())

    def run_driver(self, module: str, *args: str, timeout: float = 300) -> Any:
        """`python -m module args` joined to the cluster; its last stdout line, parsed as JSON."""
        done = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=self.driver_env(),
                              capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"{module} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return json.loads(done.stdout.strip().splitlines()[-1])

    def stop(self) -> None:
        """Kill the `ray start` process's group, then every process it started that left the
        group (Ray's workers make their own), by pid; then remove the cluster's temp dir."""
        if self.process is None:
            return
        started = descendants(self.process.pid)
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        for pid, start in started.items():
            if _running(pid, start):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        deadline = time.time() + 30
        while time.time() < deadline and any(_running(pid, start) for pid, start in started.items()):
            time.sleep(0.2)
        self.process = None
        shutil.rmtree(self.root, ignore_errors=True)


def _scratch() -> str:
    """A short directory for the cluster's temp dir (AF_UNIX socket paths are limited to 107 bytes)."""
    path = os.path.join(tempfile.gettempdir(), "autoscale")
    os.makedirs(path, exist_ok=True)
    return path
