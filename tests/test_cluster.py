"""The Ray connection: a private local instance that never attaches to another one here."""
from __future__ import annotations

import os
import subprocess
import sys

from pipeline.cluster import target_address
from pipeline.config import ClusterConfig
from tests.conftest import REPO


def test_target_address_prefers_config_then_ray_address(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert target_address(ClusterConfig()) is None
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")
    assert target_address(ClusterConfig()) == "http://127.0.0.1:8265"
    assert target_address(ClusterConfig(address="10.0.0.1:6379")) == "10.0.0.1:6379"


def test_a_local_instance_does_not_attach_to_another_ray_on_this_machine(ray_local):
    """With the test session's Ray running, a pipeline process starts its own instance."""
    ours = ray_local.get_runtime_context().gcs_address
    code = ("from pipeline import cluster; from pipeline.config import ClusterConfig; import ray; "
            "cluster.connect(ClusterConfig(num_cpus=1)); "
            "print('GCS', ray.get_runtime_context().gcs_address, ray.cluster_resources().get('CPU')); "
            # the worker setup hook ran in the workers: the State-API polling warning is filtered there
            "import logging; probe = ray.remote(lambda: len(logging.getLogger(cluster.STATE_API_POLL_LOGGER).filters)); "
            "print('FILTERS', ray.get(probe.remote()))")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.startswith("GCS"))
    _, gcs, cpus = line.split()
    assert gcs != ours
    assert float(cpus) == 1.0  # sized as asked, not the session's 2 CPUs
    assert "FILTERS 1" in proc.stdout, proc.stdout + proc.stderr[-2000:]


def test_the_state_api_polling_warning_is_dropped_and_nothing_else():
    import logging

    from pipeline import cluster

    cluster.quiet_state_api_polling()
    cluster.quiet_state_api_polling()  # idempotent: one filter
    logger = logging.getLogger(cluster.STATE_API_POLL_LOGGER)
    assert sum(isinstance(f, cluster._DropStateApiPolling) for f in logger.filters) == 1

    def record(message):
        return logging.LogRecord(logger.name, logging.WARNING, __file__, 1, message, None, None)

    assert not logger.filter(record(cluster.STATE_API_POLL_WARNING + ". State API may be temporarily unavailable."))
    assert logger.filter(record("Failed to clean up placement group: boom"))
