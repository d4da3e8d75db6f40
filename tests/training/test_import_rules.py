"""pipeline.training knows Ray and torch but not MLflow or the pipeline around it."""
import ast
from pathlib import Path

import pipeline.training

PKG = Path(pipeline.training.__file__).parent
FORBIDDEN = ("mlflow", "stages", "pipeline.run", "pipeline.graph", "pipeline.tracking")


def test_training_imports_no_mlflow_or_pipeline_runner():
    for path in PKG.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for name in names:
                assert not any(name == f or name.startswith(f + ".") for f in FORBIDDEN), f"{path.name} imports {name}"
