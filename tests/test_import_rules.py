"""DESIGN.md's import rules, so each room keeps one job:
- pipeline/diffusion and pipeline/nets are pure PyTorch (+ numpy): no Ray, MLflow, WebDataset;
- pipeline/data and pipeline/metrics import neither Ray nor MLflow;
- pipeline/training knows Ray and torch, not MLflow; it may call generation, never the reverse;
- pipeline/generation knows Ray and torch, not MLflow or training;
- pipeline/leaderboard reads MLflow, never Ray or torch;
- benches compare library code with its peers, never through a stage or the runner;
- pipeline/capacity counts work from the networks: no Ray, MLflow or runner;
- only run.py, graph.py, tracking.py and stages/ know that a pipeline exists (no library module
  imports the runner, the graph, tracking or a stage; the graph finds stages by name).
Every module under pipeline/ falls under one rule (test_every_module_has_a_rule)."""
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
    "pipeline/generation": ("mlflow", "pipeline.training", *PIPELINE_ONLY),
    "pipeline/leaderboard": ("ray", "torch", *PIPELINE_ONLY),
    "pipeline/benches": ("mlflow", *PIPELINE_ONLY),
    "pipeline/capacity": ("ray", "mlflow", "webdataset", *PIPELINE_ONLY),
}
# Top-level modules of pipeline/: the runner's own modules may know each other, never a stage.
# config.py holds the tracking section, so its rule calls tracking's own URI check.
RUNNER_MODULES = ("run.py", "graph.py", "tracking.py", "config.py")
TOP_LEVEL_LIBRARY = PIPELINE_ONLY
TOP_LEVEL_RUNNER = ("stages",)


def forbidden_for(path: Path) -> tuple[str, ...] | None:
    """The names a module may not import, or None when no rule covers it."""
    relative = path.relative_to(REPO)
    if relative.parent == Path("pipeline"):
        return TOP_LEVEL_RUNNER if relative.name in RUNNER_MODULES else TOP_LEVEL_LIBRARY
    for package, forbidden in RULES.items():
        if relative.is_relative_to(package):
            return forbidden
    return None


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def violations(path: Path, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(name for name in imported_modules(path)
                  if any(name == f or name.startswith(f + ".") for f in forbidden))


@pytest.mark.parametrize("package", sorted(RULES))
def test_package_imports_nothing_forbidden(package):
    files = sorted((REPO / package).rglob("*.py"))
    assert files, f"{package} has no modules"
    for path in files:
        bad = violations(path, RULES[package])
        assert not bad, f"{path.relative_to(REPO)} imports {bad}"


def test_top_level_modules_import_nothing_forbidden():
    for path in sorted((REPO / "pipeline").glob("*.py")):
        bad = violations(path, forbidden_for(path))
        assert not bad, f"{path.relative_to(REPO)} imports {bad}"


def test_every_module_has_a_rule():
    uncovered = [str(p.relative_to(REPO)) for p in sorted((REPO / "pipeline").rglob("*.py"))
                 if forbidden_for(p) is None]
    assert not uncovered, f"modules no import rule covers: {uncovered}"


def test_the_pure_packages_load_no_ray_or_mlflow_at_import():
    code = ("import sys, pipeline.diffusion.samplers, pipeline.diffusion.guidance, pipeline.nets.unet, "
            "pipeline.metrics, pipeline.data.loader; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'mlflow'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_the_rule_catches_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import ray\nfrom mlflow.tracking import MlflowClient\n"
                   "def late():\n    from stages.shard import run\n")
    assert {"ray", "mlflow.tracking", "stages.shard"} <= imported_modules(bad)
    assert violations(bad, RULES["pipeline/generation"]) == ["mlflow.tracking", "stages.shard"]
    assert forbidden_for(REPO / "pipeline" / "generation" / "new_module.py") == RULES["pipeline/generation"]
    assert forbidden_for(REPO / "pipeline" / "new_room" / "x.py") is None
