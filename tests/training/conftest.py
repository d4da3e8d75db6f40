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
