"""Shared fixtures: one real local Ray instance per test session, isolated store and MLflow."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def ray_local():
    """A private local Ray instance (2 CPUs), started once for the whole session (~10 s)."""
    import ray

    from pipeline import cluster
    from pipeline.config import ClusterConfig

    cluster.connect(ClusterConfig(num_cpus=2))
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def digits_shards(ray_local, tmp_path_factory):
    """Digits shards built once per session by the real shard stage."""
    from pipeline.run import main
    from tests.conftest import isolated_overrides

    root = tmp_path_factory.mktemp("digits")
    assert main([*isolated_overrides(root), "--stages", "shard"]) == 0
    stage_dir = root / "runs" / "shard"
    [key] = [d for d in os.listdir(stage_dir) if not d.startswith(("_", "."))]
    return str(stage_dir / key)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh working directory: ./runs, ./mlflow.db and ./mlruns land here."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def isolated_overrides(root: Path) -> list[str]:
    """`--set` arguments that point the store and MLflow into `root`."""
    return [
        "--set", f"store.root={root / 'runs'}",
        "--set", f"tracking.uri=sqlite:///{root / 'mlflow.db'}",
        "--set", f"tracking.artifact_location={root / 'mlruns'}",
    ]


@pytest.fixture
def run_pipeline(workdir, ray_local):
    """Run `python -m pipeline.run` in-process against the isolated store and MLflow."""
    from pipeline.run import main

    def _run(*args: str, stage_modules=None) -> int:
        return main([*isolated_overrides(workdir), *args], stage_modules=stage_modules)

    return _run


def pytest_configure(config):
    import tempfile

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # failure logs of runs in this process (pipeline.failures) stay out of the checkout
    os.environ.setdefault("PIPELINE_LOG_DIR", tempfile.mkdtemp(prefix="pipeline-test-logs-"))
    os.environ.setdefault("TQDM_DISABLE", "1")
    # Ray Train's controller looks at its workers every 2 s, so each of the suite's many short fits
    # idled ~2-4 s after its last step (and after a worker died) before it noticed; 0.5 s changes
    # only that latency. Inherited by every Ray instance and pipeline process the tests start.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
