"""cluster/gpu.yaml is a valid `ray up` config: checked against the schema shipped in ray."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import ray.autoscaler
import yaml

REPO = Path(__file__).resolve().parent.parent
SCHEMA = Path(ray.autoscaler.__file__).parent / "ray-schema.json"


def _load():
    return yaml.safe_load((REPO / "cluster/gpu.yaml").read_text())


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
