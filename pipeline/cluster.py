"""The Ray connection: a private local instance by default, an existing cluster when asked.

- `cluster.address` set (or RAY_ADDRESS, which `ray job submit` sets for the driver): connect.
- Otherwise start a new local instance (`address="local"`), sized to this machine, that never
  attaches to another Ray instance running here. Its node address is loopback, so every service
  it starts (GCS, raylet, object manager, worker gRPC, agents) listens on 127.0.0.1 only; its
  dashboard (off unless asked) binds to `cluster.dashboard_host`, loopback by default.
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Optional

from pipeline.config import ClusterConfig

# Function-local imports: they bring in Ray, which importing this module does not need.

PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
# Ray Train V2's placement-group cleaner polls the State API, which lives in the dashboard; a
# local instance without one makes it warn about once a second for the whole training (it then
# cannot clean up after a dead controller, which the warning does not change).
STATE_API_POLL_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"
STATE_API_POLL_WARNING = "Failed to query Ray Train Controller actor state"


class _DropStateApiPolling(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(STATE_API_POLL_WARNING)


def quiet_state_api_polling() -> None:
    """Worker setup hook of the local instance: drops that one repeated warning, nothing else."""
    logger = logging.getLogger(STATE_API_POLL_LOGGER)
    if not any(isinstance(f, _DropStateApiPolling) for f in logger.filters):
        logger.addFilter(_DropStateApiPolling())


def target_address(cfg: ClusterConfig) -> Optional[str]:
    """The cluster to join, or None for a new local instance."""
    return cfg.address or os.environ.get("RAY_ADDRESS") or None


LOOPBACK = "127.0.0.1"


@contextlib.contextmanager
def _loopback_node():
    """Ray takes a node's address from `ray_constants.ENABLE_RAY_CLUSTER` (read from
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER when ray is imported): off, the node is 127.0.0.1 and its
    gRPC servers bind there, as on macOS. Ray may already be imported, so the constant is set for
    the start of the instance and the environment variable for the processes it spawns."""
    from ray._private import ray_constants

    saved_env = os.environ.get(LOOPBACK_ENV)
    saved = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[LOOPBACK_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved
        if saved_env is None:
            os.environ.pop(LOOPBACK_ENV, None)
        else:
            os.environ[LOOPBACK_ENV] = saved_env


LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_dashboard_url: Optional[str] = None  # host:port of the dashboard of the instance connected to, if any


def _remember(context):
    global _dashboard_url
    _dashboard_url = getattr(context, "dashboard_url", None) or None
    return context


def connect(cfg: ClusterConfig):
    """Initialise Ray once per process; returns ray's context. Idempotent."""
    import ray

    if ray.is_initialized():
        return ray.get_runtime_context()
    address = target_address(cfg)
    common = dict(namespace=cfg.namespace, logging_level=logging.WARNING, log_to_driver=True)
    if address:
        return _remember(ray.init(address=address, **common))
    # Workers of a local instance import the package from this checkout even when it is not
    # pip-installed (tests run from the source tree).
    pythonpath = os.pathsep.join(p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH", "")) if p)
    with _loopback_node():
        return _remember(ray.init(
            address="local",
            _node_ip_address=LOOPBACK,
            num_cpus=cfg.num_cpus or os.cpu_count(),
            num_gpus=cfg.num_gpus,
            include_dashboard=cfg.include_dashboard,
            dashboard_host=cfg.dashboard_host,
            runtime_env={"env_vars": {"PYTHONPATH": pythonpath},
                         **({} if cfg.include_dashboard else
                            {"worker_process_setup_hook": "pipeline.cluster.quiet_state_api_polling"})},
            **common,
        ))


def disconnect() -> None:
    """Cancel the Ray work this process started: disconnecting ends the driver's job, which kills
    its tasks, actors and placement groups (a private local instance stops altogether)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def describe() -> str:
    import ray

    resources = ray.cluster_resources()
    nodes = len([n for n in ray.nodes() if n.get("Alive")])
    cpus, gpus = resources.get("CPU", 0), resources.get("GPU", 0)
    dashboard = f", dashboard http://{_dashboard_url}" if _dashboard_url else ""
    return f"ray: {nodes} node(s), {cpus:g} CPU, {gpus:g} GPU{dashboard}"
