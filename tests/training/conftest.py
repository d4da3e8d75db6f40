"""Digits shards built once per session by the real shard stage, for the machinery tests."""
import os

import pytest


@pytest.fixture(scope="session")
def digits_shards(ray_local, tmp_path_factory):
    from pipeline.run import main
    from tests.conftest import isolated_overrides

    root = tmp_path_factory.mktemp("digits")
    assert main([*isolated_overrides(root), "--stages", "shard"]) == 0
    stage_dir = root / "runs" / "shard"
    [key] = [d for d in os.listdir(stage_dir) if not d.startswith(("_", "."))]
    return str(stage_dir / key)


def run_own_cluster(module: str, *args: str, timeout: float = 300) -> tuple[dict, str]:
    """Run `python -m module args` in its own process, where it builds its own Ray cluster (so it
    never meets the session's `ray_local`); (its last stdout line as JSON, all of its stdout)."""
    import json
    import subprocess
    import sys

    from tests.conftest import REPO

    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_ADDRESS": ""}
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stdout
