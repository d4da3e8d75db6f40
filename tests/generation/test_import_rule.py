"""pipeline/generation is library code: no MLflow, no runner or stage imports, Ray only in the pool."""
from tests.test_import_rules import PIPELINE_ONLY, REPO, imported_modules


def test_generation_imports():
    files = sorted((REPO / "pipeline" / "generation").glob("*.py"))
    assert len(files) >= 8
    for path in files:
        forbidden = ("mlflow", *PIPELINE_ONLY) + (() if path.name == "pool.py" else ("ray",))
        for name in imported_modules(path):
            assert not any(name == f or name.startswith(f + ".") for f in forbidden), f"{path.name} imports {name}"
