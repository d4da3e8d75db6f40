"""train_evalnet through the real runner on digits (the shard stage runs first)."""
import dataclasses
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


def _output(workdir, stage):
    stage_dir = workdir / "runs" / stage
    [key] = [d for d in os.listdir(stage_dir) if not d.startswith(("_", ".")) and not d.endswith(".partial")]
    return stage_dir / key


LOAD_WITHOUT_RAY = """
import sys

import pytest
sys.modules["ray"] = None  # any import of ray now fails
from pipeline.training.evalnet import accuracy
from pipeline.weights import load_evalnet
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
    from tests.training.test_train_stages import assert_shards_are_the_dataset_input

    assert_shards_are_the_dataset_input(run, workdir)
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == summary["nimg"] // 128

    assert run_pipeline("--stages", "train_evalnet") == 0  # cached: nothing re-runs


def test_more_workers_than_cpus_fails_the_stage_clearly(run_pipeline, capsys):
    assert run_pipeline("--stages", "train_evalnet", "--set", "evalnet.num_workers=4") == 1
    printed = capsys.readouterr().out
    assert "NotEnoughResourcesError: 4 training workers need 4 CPUs (one each) but the Ray cluster has 2" in printed


@pytest.mark.slow
def test_interrupted_stage_resumes_from_its_checkpoints(run_pipeline, workdir):
    """A first attempt dies at ~15 kimg, leaving checkpoints in the partial output; the re-run
    goes on from the last one."""
    from ray.train import WorkerGroupError

    from pipeline.config import load_config
    from pipeline.graph import build_instances, load_stages
    from pipeline.store import Store
    from pipeline.training.evalnet import EvalnetTask
    from pipeline.training.networks import evalnet_arch
    from pipeline.training.spec import WorkerCrash, train_spec
    from pipeline.training.trainer import fit
    from stages.train_evalnet import RAY_RUN
    from tests.conftest import isolated_overrides

    assert run_pipeline("--stages", "shard") == 0
    config = load_config(None, isolated_overrides(workdir)[1::2])
    store = Store(config.store.root)
    [inst] = [i for i in build_instances(load_stages(), config) if i.name == "train_evalnet"]
    partial = store.begin(inst.name, inst.key)
    spec = train_spec(config.evalnet)
    crashing = dataclasses.replace(spec, max_failures=0,
                                   crash=WorkerCrash(rank=0, after_nimg=15000, marker=str(workdir / "crashed")))
    arch = evalnet_arch(config.evalnet, in_channels=3, num_classes=10)
    with pytest.raises(WorkerGroupError):
        fit(EvalnetTask(arch), crashing, str(_output(workdir, "shard")), partial.local_path, name=RAY_RUN)

    assert run_pipeline("--stages", "train_evalnet") == 0
    summary = json.loads((_output(workdir, "train_evalnet") / "_MANIFEST.json").read_text())["summary"]
    [resumed_at] = summary["resumed_from_nimg"]
    assert resumed_at == 10112  # the only checkpoint before the crash (every 10 kimg, batch 128)
    assert summary["val_accuracy"] >= 0.95
