"""train_evalnet through the real runner on digits (the shard stage runs first)."""
import json
import os
import subprocess
import sys

from tests.conftest import REPO


def _output(workdir, stage):
    stage_dir = workdir / "runs" / stage
    [key] = [d for d in os.listdir(stage_dir) if not d.startswith(("_", ".")) and not d.endswith(".partial")]
    return stage_dir / key


LOAD_WITHOUT_RAY = """
import sys
sys.modules["ray"] = None  # any import of ray now fails
from pipeline.training.evalnet import load_evalnet, accuracy
model = load_evalnet(sys.argv[1])
print(accuracy(model, sys.argv[2], "val")[0])
"""


def test_evalnet_reaches_95_percent_and_loads_without_ray(run_pipeline, workdir):
    assert run_pipeline("--stages", "train_evalnet") == 0
    out = _output(workdir, "train_evalnet")
    assert sorted(p.name for p in out.iterdir()) == ["_MANIFEST.json", "evalnet.json", "evalnet.pt"]
    summary = json.loads((out / "_MANIFEST.json").read_text())["summary"]
    assert summary["val_accuracy"] >= 0.95 and summary["num_val"] == 179
    assert summary["nimg"] >= 30000

    reloaded = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_RAY, str(out), str(_output(workdir, "shard"))],
                              cwd=REPO, capture_output=True, text=True, check=True)
    assert float(reloaded.stdout.strip()) == summary["val_accuracy"]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    [run] = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])
             if r.data.tags.get("pipeline.stage") == "train_evalnet"]
    assert {"train_loss", "images_per_s", "lr", "val_accuracy"} <= set(run.data.metrics)
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == summary["nimg"] // 128

    assert run_pipeline("--stages", "train_evalnet") == 0  # cached: nothing re-runs


def test_more_workers_than_cpus_fails_the_stage_clearly(run_pipeline, capsys):
    assert run_pipeline("--stages", "train_evalnet", "--set", "evalnet.num_workers=4") == 1
    printed = capsys.readouterr().out
    assert "NotEnoughResourcesError: 4 training workers need 4 CPUs (one each) but the Ray cluster has 2" in printed
