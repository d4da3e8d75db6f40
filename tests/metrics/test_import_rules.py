"""pipeline.metrics is a pure library: no Ray, MLflow or WebDataset, no pipeline modules."""
import ast
import subprocess
import sys
from pathlib import Path

import pipeline.metrics

PKG = Path(pipeline.metrics.__file__).parent
FORBIDDEN = ("ray", "mlflow", "webdataset", "stages")
PIPELINE_ONLY = ("pipeline.run", "pipeline.graph", "pipeline.store", "pipeline.tracking",
                 "pipeline.cluster", "pipeline.config")


def test_sources_import_nothing_forbidden():
    for path in PKG.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"
                assert not name.startswith(PIPELINE_ONLY), f"{path.name} imports {name}"


def test_importing_loads_no_ray_or_mlflow():
    code = ("import sys, pipeline.metrics, pipeline.metrics.cleanfid_compat; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'mlflow', 'webdataset')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PKG.parent.parent)
    assert out.stdout.strip() == "[]"
