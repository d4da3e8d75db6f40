"""The Ray connection: a private local instance by default, an existing cluster when asked.

- `cluster.address` set (or RAY_ADDRESS, which `ray job submit` sets for the driver): connect.
- Otherwise start a new local instance (`address="local"`), sized to this machine, that never
  attaches to another Ray instance running here; its dashboard (off unless asked) binds to
  `cluster.dashboard_host`, loopback by default.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

from pipeline.config import ClusterConfig

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


def connect(cfg: ClusterConfig):
    """Initialise Ray once per process; returns ray's context. Idempotent."""
    import ray

    if ray.is_initialized():
        return ray.get_runtime_context()
    address = target_address(cfg)
    common = dict(namespace=cfg.namespace, logging_level=logging.WARNING, log_to_driver=True)
    if address:
        return ray.init(address=address, **common)
    # Workers of a local instance import the package from this checkout even when it is not
    # pip-installed (tests run from the source tree).
    pythonpath = os.pathsep.join(p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH", "")) if p)
    return ray.init(
        address="local",
        num_cpus=cfg.num_cpus or os.cpu_count(),
        num_gpus=cfg.num_gpus,
        include_dashboard=cfg.include_dashboard,
        dashboard_host=cfg.dashboard_host,
        runtime_env={"env_vars": {"PYTHONPATH": pythonpath},
                     **({} if cfg.include_dashboard else
                        {"worker_process_setup_hook": "pipeline.cluster.quiet_state_api_polling"})},
        **common,
    )


def describe() -> str:
    import ray

    resources = ray.cluster_resources()
    nodes = len([n for n in ray.nodes() if n.get("Alive")])
    cpus, gpus = resources.get("CPU", 0), resources.get("GPU", 0)
    return f"ray: {nodes} node(s), {cpus:g} CPU, {gpus:g} GPU"
