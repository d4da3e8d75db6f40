"""Fixtures for the data tests: small generated trees (Ray comes from tests/conftest.py: ray_local)."""
from __future__ import annotations

import pytest

from pipeline.data.generate import TreeSpec, generate_tree


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
