"""The cluster files are valid and keep a team's data: cluster/gpu.yaml against the schema shipped
in ray; the Kubernetes manifests against the Kubernetes API's models (and KubeRay's RayJob CRD when
KUBERAY_CRD names its YAML); storage and MLflow apart from the job; credentials only from Secrets
or the environment; Ray's token authentication on."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml

REPO = Path(__file__).resolve().parent.parent
SCHEMA = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
MANIFESTS = ("kuberay-storage.yaml", "kuberay-postgres.yaml", "kuberay-mlflow.yaml", "kuberay.yaml")
CLUSTER_FILES = [REPO / "cluster" / name for name in ("gpu.yaml", *MANIFESTS)]


def _load():
    return yaml.safe_load((REPO / "cluster/gpu.yaml").read_text())


def manifest(name: str) -> dict[str, dict]:
    """The objects of cluster/<name>, by kind (each file holds one object of a kind)."""
    docs = list(yaml.safe_load_all((REPO / "cluster" / name).read_text()))
    by_kind = {d["kind"]: d for d in docs}
    assert len(by_kind) == len(docs), f"{name}: two objects of one kind"
    return by_kind


def test_gpu_yaml_validates_against_rays_schema():
    jsonschema.validate(_load(), json.loads(SCHEMA.read_text()))


def test_gpu_yaml_has_a_cpu_head_and_autoscaling_gpu_workers():
    config = _load()
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert workers and all(t["resources"]["GPU"] >= 1 and t["min_workers"] == 0 for t in workers)
    assert sum(t["max_workers"] for t in workers) >= config["max_workers"]


def test_services_bind_to_loopback_and_no_secret_is_written():
    text = (REPO / "cluster/gpu.yaml").read_text()
    assert "--dashboard-host=127.0.0.1" in text and "mlflow server --host 127.0.0.1" in text
    for secret in ("aws_secret_access_key", "AWS_SECRET", "MLFLOW_TRACKING_TOKEN="):
        assert secret not in text


def test_the_schema_check_catches_a_typo():
    config = _load()
    config["max_wrokers"] = 3
    try:
        jsonschema.validate(config, json.loads(SCHEMA.read_text()))
    except jsonschema.ValidationError as exc:
        assert "max_wrokers" in str(exc)
    else:
        raise AssertionError("a misspelt key passed the schema")


# -- Kubernetes manifests against the API's models

def _round_trip(obj: dict, model: str) -> dict:
    """obj read into the Kubernetes client's model and written back: an unknown (misspelt) field is
    dropped, a missing required one raises, so equality means the object matches the API."""
    from kubernetes.client import ApiClient

    api = ApiClient()
    return api.sanitize_for_serialization(api._ApiClient__deserialize(obj, model))


def _ray_pod_templates(job: dict) -> list[dict]:
    cluster = job["spec"]["rayClusterSpec"]
    return [cluster["headGroupSpec"]["template"]] + [w["template"] for w in cluster["workerGroupSpecs"]]


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifests_match_the_kubernetes_api(name):
    for kind, obj in manifest(name).items():
        if kind == "RayJob":
            for template in _ray_pod_templates(obj):
                assert _round_trip(template, "V1PodTemplateSpec") == template
        else:
            assert obj["apiVersion"] in ("v1", "apps/v1", "networking.k8s.io/v1")
            assert _round_trip(obj, f"V1{kind}") == obj, f"{name}: {kind} does not match the API"


def test_the_model_check_catches_a_typo():
    template = _ray_pod_templates(manifest("kuberay.yaml")["RayJob"])[0]
    container = dict(template["spec"]["containers"][0])
    container["volumeMount"] = container.pop("volumeMounts")
    typo = {**template, "spec": {**template["spec"], "containers": [container]}}
    assert _round_trip(typo, "V1PodTemplateSpec") != typo


def _unknown_fields(obj, schema: dict, path: str = "") -> list[str]:
    """Fields of obj that a structural schema (a CRD's) does not define: the API server would drop
    them (or refuse them under strict field validation)."""
    if isinstance(obj, dict) and "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        return [p for key, value in obj.items()
                for p in ([f"{path}.{key}"] if key not in schema["properties"]
                          else _unknown_fields(value, schema["properties"][key], f"{path}.{key}"))]
    if isinstance(obj, list) and "items" in schema:
        return [p for i, value in enumerate(obj) for p in _unknown_fields(value, schema["items"], f"{path}[{i}]")]
    return []


@pytest.mark.skipif(not os.environ.get("KUBERAY_CRD"),
                    reason="set KUBERAY_CRD to KubeRay's ray.io_rayjobs.yaml (ray-operator/config/crd/bases)")
def test_ray_job_matches_kuberays_crd():
    crd = yaml.safe_load(Path(os.environ["KUBERAY_CRD"]).read_text())
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]
    job = manifest("kuberay.yaml")["RayJob"]
    jsonschema.validate(job, schema)
    assert _unknown_fields({"spec": job["spec"]}, schema) == []


# -- what outlives a run

def test_the_ray_job_holds_nothing_that_must_outlive_it():
    assert set(manifest("kuberay.yaml")) == {"RayJob"}
    claim = manifest("kuberay-storage.yaml")["PersistentVolumeClaim"]
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    job = manifest("kuberay.yaml")["RayJob"]
    for template in _ray_pod_templates(job):
        claims = {v["persistentVolumeClaim"]["claimName"] for v in template["spec"]["volumes"]
                  if "persistentVolumeClaim" in v}
        assert claims == {claim["metadata"]["name"]}  # referenced, not owned
        assert all(c["name"] != "mlflow" for c in template["spec"]["containers"])
    # MLflow is its own Deployment; the run's results outlive the job's Ray cluster
    assert job["spec"]["shutdownAfterJobFinishes"] is True and job["spec"]["backoffLimit"] >= 1


def test_mlflows_database_has_a_volume_that_outlives_its_statefulset():
    postgres = manifest("kuberay-postgres.yaml")["StatefulSet"]["spec"]
    assert postgres["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    (claim,) = postgres["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    (container,) = postgres["template"]["spec"]["containers"]
    assert {m["name"] for m in container["volumeMounts"]} == {claim["metadata"]["name"]}
    assert postgres["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_nothing_of_value_is_on_a_nodes_or_pods_disk():
    for path in CLUSTER_FILES:
        text = path.read_text()
        assert "sqlite" not in text and "--backend-store-uri" not in text, path.name
    env = {e["name"]: e for e in _mlflow_container()["env"]}
    assert env["MLFLOW_ARTIFACTS_DESTINATION"]["value"].startswith("s3://")
    start = " ".join(_load()["head_start_ray_commands"])
    assert "--artifacts-destination s3://" in start and "--serve-artifacts" in start


# -- credentials and access

def _mlflow_container() -> dict:
    (container,) = manifest("kuberay-mlflow.yaml")["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


def test_credentials_come_from_a_secret_never_from_the_files():
    mlflow_env = {e["name"]: e for e in _mlflow_container()["env"]}
    db_uri = mlflow_env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"]
    (postgres,) = manifest("kuberay-postgres.yaml")["StatefulSet"]["spec"]["template"]["spec"]["containers"]
    password = {e["name"]: e for e in postgres["env"]}["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert db_uri["name"] == password["name"] and (db_uri["key"], password["key"]) == ("uri", "password")
    for path in CLUSTER_FILES:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
        assert all(d.get("kind") != "Secret" for d in docs), path.name
        text = path.read_text()
        for secret in ("aws_secret_access_key", "AWS_SECRET", "MLFLOW_TRACKING_TOKEN=", "POSTGRES_PASSWORD=",
                       "RAY_AUTH_TOKEN", "stringData"):
            assert secret not in text, (path.name, secret)
        for password in re.findall(r"postgresql[+\w]*://[^:@\s]+:([^@\s]+)@", text):
            assert password in ("$PW", "PASSWORD"), (path.name, "a database password in the file")


def test_only_the_driver_reaches_mlflow_and_only_mlflow_reaches_postgres():
    head = _ray_pod_templates(manifest("kuberay.yaml")["RayJob"])[0]["metadata"]["labels"]
    mlflow = manifest("kuberay-mlflow.yaml")
    (rule,) = mlflow["NetworkPolicy"]["spec"]["ingress"]
    allowed = rule["from"][0]["podSelector"]["matchLabels"]
    assert allowed.items() <= head.items()
    mlflow_pod = mlflow["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert mlflow["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"].items() <= mlflow_pod.items()
    (rule,) = manifest("kuberay-postgres.yaml")["NetworkPolicy"]["spec"]["ingress"]
    assert rule["from"][0]["podSelector"]["matchLabels"].items() <= mlflow_pod.items()
    assert not allowed.items() <= mlflow_pod.items()


def test_the_driver_reaches_mlflow_by_its_service_name_and_mlflow_answers_to_it():
    from mlflow.server.security_utils import is_allowed_host_header

    service = manifest("kuberay-mlflow.yaml")["Service"]
    host = f"{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    assert f"tracking.uri=http://{host}" in manifest("kuberay.yaml")["RayJob"]["spec"]["entrypoint"]
    env = {e["name"]: e for e in _mlflow_container()["env"]}
    allowed = env["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].split(",")
    assert is_allowed_host_header(allowed, host)
    assert is_allowed_host_header(allowed, f"{service['metadata']['name']}.default.svc.cluster.local:5000")
    assert is_allowed_host_header(allowed, "127.0.0.1:5000") and is_allowed_host_header(allowed, "localhost:5000")
    assert not is_allowed_host_header(allowed, "attacker.example.com:5000")


def test_ray_token_authentication_is_on():
    cluster = manifest("kuberay.yaml")["RayJob"]["spec"]["rayClusterSpec"]
    assert cluster["authOptions"] == {"mode": "token"}
    config = _load()
    assert "--env RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


def _start_mlflow_on_the_head(tmp_path, secret_ok: bool) -> tuple[int, str]:
    """Runs gpu.yaml's MLflow start command with stand-ins for AWS (boto3) and for `mlflow` (which
    records how it was called): what is checked is the command's own logic."""
    (tmp_path / "boto3").mkdir()
    (tmp_path / "boto3" / "__init__.py").write_text(
        "class _Client:\n"
        "    def get_secret_value(self, SecretId):\n"
        + ("        return {'SecretString': 'postgresql+psycopg://u:pw@db:5432/mlflow'}\n" if secret_ok else
           "        raise RuntimeError('AccessDeniedException: ' + SecretId)\n")
        + "def client(service, region_name=None):\n    return _Client()\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "mlflow.called"
    (bin_dir / "mlflow").write_text(f'#!/bin/sh\necho "$* | $MLFLOW_BACKEND_STORE_URI" > {record}\n')
    (bin_dir / "mlflow").chmod(0o755)
    python_dir = str(Path(sys.executable).parent)
    (command,) = [c for c in _load()["head_start_ray_commands"] if "mlflow server" in c]
    done = subprocess.run(["bash", "-c", command + "; status=$?; sleep 1; exit $status"], cwd=tmp_path,
                          env={**os.environ, "PATH": f"{bin_dir}:{python_dir}:{os.environ['PATH']}",
                               "PYTHONPATH": str(tmp_path)}, capture_output=True, text=True, timeout=120)
    return done.returncode, record.read_text() if record.exists() else ""


def test_the_heads_mlflow_gets_its_database_from_the_secret_or_does_not_start(tmp_path):
    (tmp_path / "ok").mkdir()
    status, called = _start_mlflow_on_the_head(tmp_path / "ok", secret_ok=True)
    assert status == 0
    args, uri = called.strip().split(" | ")
    assert uri == "postgresql+psycopg://u:pw@db:5432/mlflow" and "pw" not in args  # not visible in `ps`
    # without the secret, no server on a default (local sqlite) store
    (tmp_path / "denied").mkdir()
    status, called = _start_mlflow_on_the_head(tmp_path / "denied", secret_ok=False)
    assert status != 0 and called == ""
