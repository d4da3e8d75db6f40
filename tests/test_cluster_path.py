"""The cluster path's files: configs/imagenet64.yaml (the classifier-free guidance paper's ImageNet
64x64 protocol, with ADM-G), its reported-results file, and cluster/kuberay.yaml."""
from __future__ import annotations

from pathlib import Path

import pytest
import ray
import yaml

from pipeline.config import ConfigError, load_config

REPO = Path(__file__).resolve().parent.parent
IMAGENET64 = REPO / "configs/imagenet64.yaml"


@pytest.fixture
def imagenet64(tmp_path):
    return load_config(IMAGENET64, [f"data.path={tmp_path}"])


def test_imagenet64_needs_the_dataset_path_set():
    with pytest.raises(ConfigError, match="data.path"):
        load_config(IMAGENET64)


def test_imagenet64_follows_the_cfg_papers_protocol(imagenet64):
    c = imagenet64
    assert c.data.source.startswith("imagenet") and c.data.resolution == 64
    assert c.train.p_uncond == [0.1, 0.2, 0.5]
    assert c.sweep.p_uncond is None  # every trained model
    assert "none" in c.sweep.guidance and "cfg" in c.sweep.guidance  # w = 0 is the unguided model
    assert min(c.sweep.guidance["cfg"]) > 0 and max(c.sweep.guidance["cfg"]) == 4.0
    assert c.sweep.full_images == 50_000 and c.sample.num_images == 50_000
    assert "inception" in c.eval.extractors and c.eval.require_inception
    assert c.sweep.use_gpu and c.sample.use_gpu and c.eval.use_gpu and c.train.use_gpu


def test_imagenet64_model_is_adms(imagenet64):
    from pipeline.nets.unet import adm_imagenet64_config

    adm = adm_imagenet64_config()
    m = imagenet64.model
    assert (m.base_channels, tuple(m.channel_mult), m.num_res_blocks, tuple(m.attention_resolutions),
            m.num_head_channels, m.dropout, m.learn_sigma, m.resblock_updown, m.use_scale_shift_norm) == (
        adm["base_channels"], tuple(adm["channel_mult"]), adm["num_res_blocks"], tuple(adm["attention_resolutions"]),
        adm["num_head_channels"], adm["dropout"], adm["learn_sigma"], adm["resblock_updown"],
        adm["use_scale_shift_norm"])
    assert imagenet64.diffusion.loss == "hybrid"


def test_imagenet64_has_an_adm_g_classifier_guidance_setting(imagenet64):
    assert "classifier" in imagenet64.sweep.guidance
    assert 1.0 in imagenet64.sweep.guidance["classifier"]
    assert imagenet64.classifier.base_channels == 128 and imagenet64.classifier.num_res_blocks == 4


def test_imagenet64_reported_rows_file_loads(imagenet64):
    from pipeline.leaderboard import load_reported, resolve_reported

    from pipeline.diffusion.guidance import GUIDANCE

    paths = resolve_reported(imagenet64.sweep.reported)
    specs = [yaml.safe_load(path.read_text()) for path in paths]
    assert all(spec["dataset"] == "imagenet-64px" for spec in specs)
    assert any("Ho & Salimans" in spec["citation"] for spec in specs)
    rows = load_reported(paths)
    for _, row in rows.iterrows():  # whatever is filled in carries its numbers and the settings
        assert row["source"] == "reported" and row["guidance"] in GUIDANCE
        assert row.get("fid") is not None or row.get("is") is not None


def _kuberay(name: str = "kuberay.yaml") -> list[dict]:
    return list(yaml.safe_load_all((REPO / "cluster" / name).read_text()))


def test_kuberay_has_a_ray_job_with_a_cpu_head_and_autoscaling_gpu_workers():
    docs = {d["kind"]: d for d in _kuberay()}
    assert set(docs) == {"RayJob"}  # the volume it uses outlives it: cluster/kuberay-storage.yaml
    job = docs["RayJob"]
    assert job["apiVersion"] == "ray.io/v1" and job["metadata"]["name"]
    assert "python -m pipeline.run --config configs/imagenet64.yaml" in job["spec"]["entrypoint"]
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__ and cluster["enableInTreeAutoscaling"] is True
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    head_containers = head["template"]["spec"]["containers"]
    assert all("nvidia.com/gpu" not in c["resources"].get("limits", {}) for c in head_containers)
    workers = cluster["workerGroupSpecs"]
    assert workers and all(w["minReplicas"] == 0 and w["maxReplicas"] >= 1 for w in workers)
    for w in workers:
        for c in w["template"]["spec"]["containers"]:
            assert int(c["resources"]["limits"]["nvidia.com/gpu"]) >= 1 and c["image"]


def test_kuberay_mounts_the_shared_store_everywhere_and_logs_to_the_mlflow_service():
    docs = {d["kind"]: d for d in _kuberay() + _kuberay("kuberay-storage.yaml")}
    claim = docs["PersistentVolumeClaim"]
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    cluster = docs["RayJob"]["spec"]["rayClusterSpec"]
    pods = [cluster["headGroupSpec"]["template"]["spec"]] + [w["template"]["spec"] for w in cluster["workerGroupSpecs"]]
    for pod in pods:
        volumes = {v["name"]: v for v in pod["volumes"]}
        store = [n for n, v in volumes.items()
                 if v.get("persistentVolumeClaim", {}).get("claimName") == claim["metadata"]["name"]]
        assert store, "a pod without the shared store"
        for c in pod["containers"]:
            assert any(m["name"] == store[0] and m["mountPath"] == "/store" for m in c["volumeMounts"])
    mlflow = {d["kind"]: d for d in _kuberay("kuberay-mlflow.yaml")}
    service = f"{mlflow['Service']['metadata']['name']}:{mlflow['Service']['spec']['ports'][0]['port']}"
    entry = docs["RayJob"]["spec"]["entrypoint"]
    assert "store.root=/store/runs" in entry and f"tracking.uri=http://{service}" in entry
    text = (REPO / "cluster/kuberay.yaml").read_text()
    for secret in ("aws_secret_access_key", "AWS_SECRET", "MLFLOW_TRACKING_TOKEN="):
        assert secret not in text
