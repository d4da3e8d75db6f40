"""train_diffusion and train_classifier through the real runner on digits, with tiny settings."""
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

TINY_UNET = ["--set", "model.base_channels=16", "--set", "model.num_head_channels=16", "--set", "model.num_res_blocks=1",
             "--set", "model.dropout=0.0"]
TINY_TRAIN = ["--set", "train.p_uncond=[0.1]", "--set", "train.kimg=0.768", "--set", "train.batch_size=64",
              "--set", "train.warmup_kimg=0.128", "--set", "train.checkpoint_kimg=0.384",
              "--set", "train.sample_grid_kimg=0.384", "--set", "train.ema_decays=[0.9]",
              "--set", "train.guide.kind=smaller", "--set", "train.guide.base_channels=8", "--set", "train.guide.kimg=0.256"]
TINY_CLASSIFIER = ["--set", "classifier.base_channels=16", "--set", "classifier.num_head_channels=16",
                   "--set", "classifier.kimg=1.28", "--set", "classifier.batch_size=64", "--set", "classifier.lr=3e-3",
                   "--set", "classifier.warmup_kimg=0.128", "--set", "classifier.checkpoint_kimg=0.32"]


def _outputs(workdir, stage):
    stage_dir = workdir / "runs" / stage
    return sorted(stage_dir / d for d in os.listdir(stage_dir) if not d.startswith(("_", ".")) and "partial" not in d)


def assert_shards_are_the_dataset_input(run, workdir) -> None:
    """The training run names the shards it read as its MLflow dataset input, with their digest."""
    from pipeline.tracking import manifest_digest

    [shards] = _outputs(workdir, "shard")
    [logged] = run.inputs.dataset_inputs
    assert logged.dataset.name == "digits-8px" and json.loads(logged.dataset.source) == {"uri": str(shards)}
    assert logged.dataset.digest == manifest_digest(json.loads((shards / "_MANIFEST.json").read_text()))[:16]


def _stage_run(workdir, label):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    [run] = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])
             if r.info.run_name == label]
    return client, run


LOAD_WITHOUT_RAY = """
import sys
sys.modules["ray"] = None  # any import of ray now fails
import torch
from pipeline.weights import load_diffusion, load_guide
main, guide = load_diffusion(sys.argv[1]), load_guide(sys.argv[1])
x = torch.zeros(2, 3, 8, 8)
print(main.p_uncond, main.null_label, guide.net.base_channels, guide.meta["role"],
      tuple(main.net(x, torch.tensor([5, 5]), torch.tensor([0, 10])).shape))
"""


def test_train_diffusion_writes_the_ema_model_guide_grids_and_logs(run_pipeline, workdir):
    assert run_pipeline("--stages", "train_diffusion", *TINY_UNET, *TINY_TRAIN) == 0
    [out] = _outputs(workdir, "train_diffusion")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "_MANIFEST.json", "guide/model.json", "guide/model.pt", "model.json", "model.pt", "samples.png"]
    manifest = json.loads((out / "_MANIFEST.json").read_text())
    summary = manifest["summary"]
    assert summary["nimg"] == 768 and summary["guide_nimg"] == 256 and summary["p_uncond"] == 0.1
    assert len(summary["final_loss_t_quartiles"]) == 4 and all(q is not None for q in summary["final_loss_t_quartiles"])
    assert summary["sample_grids"] == ["samples_000000384.png", "samples_000000768.png"]
    meta = json.loads((out / "model.json").read_text())
    assert meta["role"] == "main" and meta["ema_decay"] == 0.9 and meta["unet"]["base_channels"] == 16

    loaded = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_RAY, str(out)], cwd=REPO, capture_output=True,
                            text=True, check=True)
    assert loaded.stdout.split() == ["0.1", "10", "8", "guide", "(2,", "3,", "8,", "8)"]

    client, run = _stage_run(workdir, "train_diffusion[p_uncond=0.1]")
    metrics = set(run.data.metrics)
    assert {"train_loss", "loss_mean", "images_per_s", "lr", "grad_norm", "guide_train_loss"} <= metrics
    assert {f"loss_t_q{q}" for q in range(4)} <= metrics
    assert_shards_are_the_dataset_input(run, workdir)
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 768 // 64
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "sample_grids")}
    assert artifacts == {"sample_grids/samples_000000384.png", "sample_grids/samples_000000768.png"}
    assert {a.path for a in client.list_artifacts(run.info.run_id, "model")} >= {"model/model.pt", "model/guide"}
    name, version = summary["registered_model"].rsplit("/", 1)
    assert client.get_model_version(name, version).run_id == run.info.run_id

    # where its workers ran (the local instance's one node): in the summary and as tags of the run
    import ray

    head = ray.get_runtime_context().get_node_id()
    assert summary["units"] == [{"rank": r, "node_id": head, "node_type": "head", "since_nimg": 0} for r in (0, 1)]
    assert summary["guide_units"] == summary["units"]
    tags = run.data.tags
    assert (tags["node_ids"], tags["node_types"], tags["guide.node_ids"], tags["guide.node_types"]) == (
        head, "head", head, "head")

    assert run_pipeline("--stages", "train_diffusion", *TINY_UNET, *TINY_TRAIN) == 0  # cached


@pytest.mark.slow
def test_early_snapshot_guide(run_pipeline, workdir):
    assert run_pipeline("--stages", "train_diffusion", *TINY_UNET, *TINY_TRAIN, "--set", "train.guide.kind=early",
                        "--set", "train.guide.kimg=0.3") == 0
    [out] = _outputs(workdir, "train_diffusion")
    guide = json.loads((out / "guide" / "model.json").read_text())
    assert guide["role"] == "guide" and guide["guide_kind"] == "early"
    assert guide["nimg"] == 320 and guide["unet"]["base_channels"] == 16  # the first step past 300 images


def test_train_classifier_logs_accuracy_per_noise_bucket(run_pipeline, workdir):
    assert run_pipeline("--stages", "train_classifier", *TINY_CLASSIFIER) == 0
    [out] = _outputs(workdir, "train_classifier")
    assert sorted(p.name for p in out.iterdir()) == ["_MANIFEST.json", "classifier.json", "classifier.pt"]
    summary = json.loads((out / "_MANIFEST.json").read_text())["summary"]
    for b in range(4):
        assert 0.0 <= summary[f"val_top1_t_q{b}"] <= summary[f"val_top5_t_q{b}"] <= 1.0
    assert summary["val_top1_t_q0"] > 0.2  # clean-ish images: far above chance after 1280 images

    from pipeline.weights import load_classifier

    net = load_classifier(str(out))
    assert net.meta["nimg"] == 1280 and net.num_classes == 10

    client, run = _stage_run(workdir, "train_classifier")
    assert {"train_loss", "val_top1_t_q3", "val_top5_t_q0", "loss_t_q0", "grad_norm"} <= set(run.data.metrics)
    assert_shards_are_the_dataset_input(run, workdir)
