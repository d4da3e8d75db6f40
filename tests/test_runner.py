"""The runner on a small real graph: cache hits, misses, invalidation, subsets, force, dry run,
resume after SIGKILL, and SIGTERM marking MLflow runs FAILED. Real Ray, real sqlite MLflow."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, isolated_overrides
from tests.fake_stages.graph import MODULES


def statuses(output: str) -> dict[str, str]:
    """{instance label: cached | RUN | skip} parsed from the printed plan."""
    found = {}
    for line in output.splitlines():
        m = re.match(r"\s+(\S+)\s+[0-9a-f]{20}\s+(cached|RUN|skip)\b", line)
        if m:
            found[m.group(1)] = m.group(2)
    return found


@pytest.fixture
def fake(run_pipeline, capsys):
    def _run(*args: str) -> tuple[int, dict[str, str], str]:
        code = run_pipeline(*args, stage_modules=MODULES)
        out = capsys.readouterr().out
        return code, statuses(out), out

    return _run


DEFAULT_LR = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())["train"]["lr"]
assert DEFAULT_LR != 0.001, "the invalidation test below overrides train.lr with 0.001"
ALL = {"source", "train[p_uncond=0.1]", "train[p_uncond=0.2]", "evalnet", "report"}


def ran(plan: dict[str, str]) -> set[str]:
    return {label for label, status in plan.items() if status == "RUN"}


def test_cache_hit_miss_and_exact_invalidation(fake, workdir):
    code, plan, out = fake()
    assert code == 0, out
    assert ran(plan) == ALL
    assert "finished in" in out and "mlflow ui --backend-store-uri" in out

    code, plan, _ = fake()
    assert code == 0 and ran(plan) == set() and set(plan.values()) == {"cached"}

    # One training setting: the trainings and what reads them re-run, nothing else.
    code, plan, out = fake("--set", "train.lr=0.001")
    assert code == 0 and ran(plan) == {"train[p_uncond=0.1]", "train[p_uncond=0.2]", "report"}
    assert f"changed: train.lr {DEFAULT_LR} -> 0.001" in out

    code, plan, _ = fake("--set", "train.lr=0.001", "--set", "evalnet.width=16")
    assert ran(plan) == {"evalnet", "report"}

    # Adding a p_uncond value trains only the new model.
    code, plan, _ = fake("--set", "train.lr=0.001", "--set", "evalnet.width=16",
                         "--set", "train.p_uncond=[0.1,0.2,0.5]", "--set", "sample.p_uncond=0.1")
    assert ran(plan) == {"train[p_uncond=0.5]", "report"}

    # Upstream change: everything downstream of data re-runs.
    code, plan, _ = fake("--set", "data.seed=7")
    assert ran(plan) == ALL


def test_outputs_hold_real_results(fake, workdir):
    assert fake("--set", "data.seed=2")[0] == 0
    reports = list((workdir / "runs/report").glob("*/report-0.json"))
    assert len(reports) == 1
    import json

    report = json.loads(reports[0].read_text())
    assert sorted(r["p_uncond"] for r in report["rows"]) == [0.1, 0.2]
    assert report["rows"][0]["total"] == 2 ** 2 + 3 ** 2 + 4 ** 2  # squares computed on Ray


def test_stages_subset_runs_what_it_needs(fake):
    code, plan, _ = fake("--stages", "evalnet")
    assert code == 0 and ran(plan) == {"source", "evalnet"}
    assert plan["report"] == "skip" and plan["train[p_uncond=0.1]"] == "skip"
    code, plan, _ = fake("--stages", "report")
    assert ran(plan) == {"train[p_uncond=0.1]", "train[p_uncond=0.2]", "report"}
    assert plan["source"] == "cached" and plan["evalnet"] == "cached"


def test_force_reruns_one_stage_and_keeps_downstream_cached(fake, workdir):
    assert fake()[0] == 0
    code, plan, out = fake("--force", "evalnet")
    assert code == 0 and ran(plan) == {"evalnet"}
    assert "forced (--force)" in out


def test_unknown_stage_name_is_a_usage_error(fake):
    code, plan, _ = fake("--stages", "shard,nope")
    assert code == 2 and plan == {}


def test_dry_run_writes_nothing(fake, workdir):
    before = sorted(workdir.rglob("*"))
    code, plan, out = fake("--dry-run")
    assert code == 0 and ran(plan) == ALL
    assert sorted(workdir.rglob("*")) == before == []


def test_verification_failure_reruns_the_stage(fake, workdir):
    assert fake()[0] == 0
    evalnet_file = next((workdir / "runs/evalnet").glob("*/evalnet-0.json"))
    evalnet_file.write_text("{}")
    code, plan, out = fake()
    assert ran(plan) == {"evalnet"}
    assert "output failed verification" in out


def test_the_real_graph_plans_every_stage_of_the_design(run_pipeline, capsys):
    assert run_pipeline("--dry-run") == 0
    plan = statuses(capsys.readouterr().out)
    names = {label.split("[")[0] for label in plan}
    assert names == {"shard", "train_diffusion", "train_classifier", "train_evalnet", "reference_stats",
                     "sample", "evaluate", "sweep", "leaderboard"}
    assert {"train_diffusion[p_uncond=0.1]", "train_diffusion[p_uncond=0.2]"} <= set(plan)


# ----------------------------------------------------------------------------------------------
# Interruptions, in real subprocesses


def _spawn(workdir: Path, *args: str, env_extra: dict | None = None, **kwargs) -> subprocess.Popen:
    code = ("import sys; from pipeline.run import main; from tests.fake_stages.graph import MODULES; "
            "sys.exit(main(sys.argv[1:], MODULES))")
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen([sys.executable, "-c", code, *isolated_overrides(workdir), "--set", "cluster.num_cpus=1",
                             *args], cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **kwargs)


def _runs(workdir: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("guided-diffusion")
    return client.search_runs([exp.experiment_id])


@pytest.mark.slow
def test_kill_mid_stage_leaves_no_half_output_and_the_rerun_resumes(fake, workdir):
    proc = _spawn(workdir, "--stages", "source", env_extra={"FAKE_KILL_AT": "source"})
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == -signal.SIGKILL, out
    partials = list((workdir / "runs/source").glob("*.partial"))
    assert len(partials) == 1 and len(list(partials[0].glob("source-*.json"))) == 1
    assert [p for p in (workdir / "runs/source").iterdir() if not p.name.startswith(("_", "."))
            and not p.name.endswith(".partial")] == []
    assert {r.info.status for r in _runs(workdir)} == {"RUNNING"}  # killed outright: nobody ended them

    code, plan, out = fake("--stages", "source")
    assert code == 0 and ran(plan) == {"source"}
    assert "resuming its partial output" in out
    assert "marked 2 run(s) left RUNNING by a killed process as FAILED" in out
    manifest_dir = next(p for p in (workdir / "runs/source").iterdir() if len(p.name) == 20)
    import json

    summary = json.loads((manifest_dir / "_MANIFEST.json").read_text())["summary"]
    assert summary == {"written": 2, "kept": 1}
    statuses_ = sorted(r.info.status for r in _runs(workdir))
    assert statuses_ == ["FAILED", "FAILED", "FINISHED", "FINISHED"]


@pytest.mark.slow
def test_sigterm_marks_the_runs_failed(workdir):
    proc = _spawn(workdir, "--stages", "source", env_extra={"FAKE_SLEEP": "120"})
    deadline = time.time() + 120
    seen = ""
    while time.time() < deadline:
        line = proc.stdout.readline()
        seen += line
        if "source: running" in line:
            break
    assert "source: running" in seen, seen
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, seen + out
    runs = _runs(workdir)
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FAILED"}
    assert all("Terminated" in r.data.tags.get("pipeline.failure", "") for r in runs)


def test_a_store_on_a_file_uri_runs_and_caches(fake, workdir):
    uri = f"file://{workdir}/uri-store"
    code, plan, out = fake("--set", f"store.root={uri}")
    assert code == 0 and ran(plan) == ALL
    assert f"-> {uri}/report/" in out
    code, plan, _ = fake("--set", f"store.root={uri}")
    assert ran(plan) == set()


def _parent_runs(workdir) -> list:
    """The pipeline runs, oldest first."""
    return sorted((r for r in _runs(workdir) if "mlflow.parentRunId" not in r.data.tags), key=lambda r: r.info.start_time)


def test_parent_runs_are_named_described_and_carry_the_headline(fake, workdir):
    code, _, out = fake()
    assert code == 0
    [first] = _parent_runs(workdir)
    short = first.data.tags["pipeline.config_hash"][:8]
    assert first.info.run_name == f"default · 5 stages · {short}"
    width = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())["evalnet"]["width"]
    assert first.data.metrics == {"report.rows": 2.0, "report.width": float(width)}
    report_run = next(r for r in _runs(workdir) if r.info.run_name == "report")
    note = first.data.tags["mlflow.note.content"]
    link = (f"#/experiments/{report_run.info.experiment_id}/runs/{report_run.info.run_id}/artifacts/report-0.json"
            "?workflowType=machine_learning")
    assert f"[report: report-0.json]({link})" in note
    assert "| source | ran " in note and "5 of 5 stages to run" in note
    page = next((workdir / "runs/report").glob("*/report-0.json"))
    assert f"report: {page.as_uri()}" in out  # the main page of a stage, printed at the end
    assert f"runs/{first.info.run_id}?workflowType=machine_learning" in out

    code, _, out = fake()
    second = _parent_runs(workdir)[-1]
    assert second.info.run_name == f"default · cached · {short}"
    assert second.data.metrics == first.data.metrics  # the headline of cached outputs too
    assert "| source | cached |" in second.data.tags["mlflow.note.content"]
    assert f"({link})" in second.data.tags["mlflow.note.content"]  # the run that made the page

    # one training left a partial output behind: the next run resumes it, and says so
    args = ("--set", "train.lr=0.001")
    from pipeline.config import load_config
    from pipeline.graph import build_instances, load_stages
    from tests.conftest import isolated_overrides

    sets = [s for s in isolated_overrides(workdir) if s != "--set"] + ["train.lr=0.001"]
    config = load_config(REPO / "configs" / "default.yaml", sets)
    inst = next(i for i in build_instances(load_stages(MODULES), config) if i.label == "train[p_uncond=0.1]")
    partial = workdir / "runs" / "train" / f"{inst.key}.partial"
    partial.mkdir(parents=True)
    (partial / "train-0.json").write_text(json.dumps({"total": 0, "p_uncond": 0.1, "lr": 0.001}))
    code, plan, _ = fake(*args)
    assert code == 0 and ran(plan) == {"train[p_uncond=0.1]", "train[p_uncond=0.2]", "report"}
    third = _parent_runs(workdir)[-1]
    assert third.info.run_name == f"default · 3 of 5 stages · resumed · {config.hash()[:8]}"
    assert "resumed train[p_uncond=0.1]" in third.data.tags["mlflow.note.content"]
