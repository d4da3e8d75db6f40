"""DESIGN.md's import rules, so each room keeps one job:
- pipeline/diffusion and pipeline/nets are pure PyTorch (+ numpy): no Ray, MLflow, WebDataset;
- pipeline/data and pipeline/metrics import neither Ray nor MLflow;
- pipeline/training knows Ray and torch, not MLflow;
- only run.py, graph.py and stages/ know that a pipeline exists (no library module imports
  the runner, the graph, tracking or a stage)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PIPELINE_ONLY = ("stages", "pipeline.run", "pipeline.graph", "pipeline.tracking")

RULES = {
    "pipeline/diffusion": ("ray", "mlflow", "webdataset", "pyarrow", *PIPELINE_ONLY),
    "pipeline/nets": ("ray", "mlflow", "webdataset", "pyarrow", *PIPELINE_ONLY),
    "pipeline/data": ("ray", "mlflow", *PIPELINE_ONLY),
    "pipeline/metrics": ("ray", "mlflow", "webdataset", *PIPELINE_ONLY, "pipeline.store", "pipeline.config"),
    "pipeline/training": ("mlflow", *PIPELINE_ONLY),
    "pipeline/capacity": ("ray", "mlflow", "webdataset", *PIPELINE_ONLY),
}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(RULES))
def test_package_imports_nothing_forbidden(package):
    forbidden = RULES[package]
    files = sorted((REPO / package).rglob("*.py"))
    assert files, f"{package} has no modules"
    for path in files:
        for name in imported_modules(path):
            bad = [f for f in forbidden if name == f or name.startswith(f + ".")]
            assert not bad, f"{path.relative_to(REPO)} imports {name}"


def test_the_pure_packages_load_no_ray_or_mlflow_at_import():
    code = ("import sys, pipeline.diffusion.samplers, pipeline.diffusion.guidance, pipeline.nets.unet, "
            "pipeline.metrics, pipeline.data.loader; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'mlflow'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_the_rule_catches_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import ray\nfrom mlflow.tracking import MlflowClient\n")
    assert {"ray", "mlflow.tracking"} <= imported_modules(bad)
