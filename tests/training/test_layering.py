"""Training and generation do not import each other in a cycle: the trained-model files live in
pipeline.weights, which both use; generation never imports training."""
import subprocess
import sys

from tests.test_import_rules import REPO, imported_modules


def test_generation_and_weights_never_import_training():
    files = sorted((REPO / "pipeline" / "generation").glob("*.py")) + [REPO / "pipeline" / "weights.py"]
    for path in files:
        for name in imported_modules(path):
            assert not name.startswith("pipeline.training"), f"{path.relative_to(REPO)} imports {name}"


def test_weights_import_no_generation_ray_or_mlflow():
    for name in imported_modules(REPO / "pipeline" / "weights.py"):
        assert not name.startswith(("pipeline.generation", "ray", "mlflow")), name


def test_loading_models_for_generation_loads_no_training_module():
    code = ("import sys, pipeline.generation.models, pipeline.generation.scoring; "
            "print(sorted(m for m in sys.modules if m.startswith('pipeline.training')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_planning_and_the_dry_run_units_load_no_ray_or_mlflow():
    """Config loading imports torch (its rules call the networks' own checks), but neither the plan
    nor the units it prints start Ray or MLflow."""
    code = ("import sys; from pipeline.config import load_config; from pipeline.graph import build_instances, "
            "format_units, load_stages, Plan; cfg = load_config(None); "
            "print(format_units(Plan(build_instances(load_stages(), cfg)), cfg).count('training worker')); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'mlflow'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.split("\n")[:2] == ["3", "[]"]
