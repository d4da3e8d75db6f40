"""Helpers of the training tests (the digits shards fixture lives in tests/conftest.py)."""
import os


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
