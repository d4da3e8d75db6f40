"""Bad and unreachable tracking and store URIs, a GPU that is not there, a dataset URI that does
not exist, sweep lists left empty: each refused before Ray or MLflow start, with exit status 2 and
a line naming the key and the value, within seconds (never the minutes of a client's retries)."""
from __future__ import annotations

import time

import pytest

from pipeline.run import main
from tests.reliability.drive import arguments

CASES = [
    # the config's rules
    (["tracking.uri=foo://bar"], "tracking.uri = 'foo://bar': unknown scheme 'foo'"),
    (["tracking.experiment="], "tracking.experiment = '': an experiment name is required"),
    (["tracking.experiment=  "], "an experiment name is required"),
    (["sweep.guidance.cfg=[]"], "sweep.guidance.cfg = []: a listed guidance kind needs at least one strength"),
    (["sweep.p_uncond=[]"], "sweep.p_uncond = []: no model to sweep"),
    # what the config points at, asked before anything starts
    (["tracking.uri=http://127.0.0.1:1"], "tracking.uri = 'http://127.0.0.1:1': no MLflow server answers"),
    (["tracking.uri=postgresql://127.0.0.1:1/db"], "database host 127.0.0.1:1 not reachable"),
    (["tracking.uri=sqlite:////no/such/dir/mlflow.db"], "the directory /no/such/dir does not exist"),
    (["store.root=foo://bar"], "store.root = 'foo://bar': foo://bar: unknown filesystem scheme 'foo'"),
    (["store.root={tmp}/a-file/runs"], "cannot be created: {tmp}/a-file is not a writable directory"),
    # GPUs a private local instance cannot have (pipeline.resources)
    (["train.use_gpu=true", "cluster.num_gpus=0"], "train_diffusion: 1 x training worker (1 CPU, 1 GPU each) (use_gpu) need 1 GPU but "
                             "this machine's private Ray instance has 0"),
    (["sweep.use_gpu=true", "cluster.num_gpus=0"], "sweep: 2 x sampler actor (1 CPU, 1 GPU each) (sweep.use_gpu, "
                                                  "eval.use_gpu) need 1 GPU but"),
]


def _run(tmp_path, overrides: list[str]) -> int:
    """The real graph with the suite's reduced config, its store and MLflow under tmp_path."""
    args = arguments(tmp_path)
    for override in overrides:
        args += ["--set", override]
    return main(args)


@pytest.mark.parametrize("overrides,message", CASES, ids=[c[0][0] for c in CASES])
def test_refused_before_anything_starts(tmp_path, monkeypatch, capsys, overrides, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    (tmp_path / "a-file").write_text("not a directory")
    import ray

    session_before = _ray_session(ray)  # the suite's shared local instance may be up (tests/conftest.py ray_local)
    started = time.time()
    assert _run(tmp_path, [o.format(tmp=tmp_path) for o in overrides]) == 2
    err = capsys.readouterr().err
    assert message.format(tmp=tmp_path) in err and "nothing was started" in err, err
    assert time.time() - started < 30
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()
    assert _ray_session(ray) == session_before  # the run started no Ray instance and joined none


def _ray_session(ray):
    """The Ray session this process is connected to, or None."""
    return ray.get_runtime_context().get_job_id() and ray._private.worker._global_node.session_name \
        if ray.is_initialized() else None


def test_a_dataset_uri_that_does_not_answer_is_refused(tmp_path, monkeypatch, capsys):
    """An s3:// data.path with no such bucket (here no network either): refused before Ray."""
    from pipeline import store

    monkeypatch.setattr(store, "PROBE_TIMEOUT", 3.0)
    monkeypatch.setattr(store.probe, "__defaults__", (3.0,))
    monkeypatch.chdir(tmp_path)
    assert _run(tmp_path, ["data.source=imagefolder", "data.path=s3://no-such-bucket-pipeline-test/imagenet"]) == 2
    assert "data.path = 's3://no-such-bucket-pipeline-test/imagenet':" in capsys.readouterr().err


def test_an_error_before_the_first_stage_is_not_silent(tmp_path, monkeypatch, capsys):
    """Anything unexpected still ends with one plain line and a log holding the traceback."""
    import pipeline.run as run

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(run, "execute", lambda *a: (_ for _ in ()).throw(OSError("disk on fire")))
    assert _run(tmp_path, []) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("pipeline failed: OSError: disk on fire; log: ")
    log = err.rsplit("log: ", 1)[1]
    assert "Traceback" in open(log).read() and "disk on fire" in open(log).read()
