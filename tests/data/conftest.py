"""Fixtures for the data tests: small generated trees and one shared local Ray instance."""
from __future__ import annotations

import os

import pytest

from pipeline.data.generate import TreeSpec, generate_tree

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance for the whole test session (starting Ray costs ~10 s)."""
    import ray

    if not ray.is_initialized():
        pythonpath = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH", "")) if p)
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING",
                 runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})
    return ray


def _tree(tmp_path_factory, layout: str, **kw) -> str:
    spec = TreeSpec(**{"num_classes": 6, "train_per_class": 8, "val_per_class": 2, "image_size": 40, "layout": layout, **kw})
    return generate_tree(str(tmp_path_factory.mktemp(f"tree-{layout}") / "root"), spec)


@pytest.fixture(scope="session")
def kaggle_tree(tmp_path_factory) -> str:
    return _tree(tmp_path_factory, "kaggle")


@pytest.fixture(scope="session")
def tars_tree(tmp_path_factory) -> str:
    return _tree(tmp_path_factory, "tars")


@pytest.fixture(scope="session")
def imagefolder_tree(tmp_path_factory) -> str:
    return _tree(tmp_path_factory, "imagefolder")
