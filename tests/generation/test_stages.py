"""reference_stats, sample and evaluate through the real runner on digits (model stages faked
with tiny networks trained for a few steps)."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

STAGES = ("stages.shard", "tests.generation.fake_models.train_diffusion",
          "tests.generation.fake_models.train_classifier", "tests.generation.fake_models.train_evalnet",
          "stages.reference_stats", "stages.sample", "stages.evaluate")
SMALL = ["--set", "train.p_uncond=[0.1]", "--set", "sample.num_images=40", "--set", "sample.steps=4",
         "--set", "sample.chunk_size=16", "--set", "sample.batch_size=8", "--set", "sample.num_actors=2",
         "--set", "eval.num_reference=300", "--set", "eval.batch_size=64",
         "--set", "eval.inception_weights=/nonexistent/inception-2015-12-05.pt"]
OFFLINE = {"fd_evalnet", "kid_evalnet_mean", "kid_evalnet_std", "is_evalnet", "is_evalnet_std", "precision_evalnet",
           "recall_evalnet", "class_accuracy"}


def _output(workdir, stage):
    stage_dir = workdir / "runs" / stage
    [key] = [d for d in os.listdir(stage_dir) if not d.startswith(("_", ".")) and not d.endswith(".partial")]
    return stage_dir / key


def _chunks(path):
    return {name: (path / name).read_bytes() for name in sorted(os.listdir(path)) if name.startswith("chunk_")}


@pytest.mark.slow
def test_sample_and_evaluate_through_the_runner_then_resume(run_pipeline, workdir, capsys):
    assert run_pipeline("--stages", "sample,evaluate", *SMALL, stage_modules=STAGES) == 0
    printed = capsys.readouterr().out
    assert "inception skipped" in printed and "eval.inception_weights" in printed

    refs = _output(workdir, "reference_stats")
    index = json.loads((refs / "reference.json").read_text())
    assert list(index["extractors"]) == ["evalnet"] and index["extractors"]["evalnet"]["num_samples"] == 300

    sample_dir = _output(workdir, "sample")
    chunks = _chunks(sample_dir)
    assert list(chunks) == ["chunk_000000.npz", "chunk_000001.npz", "chunk_000002.npz"]
    with np.load(sample_dir / "chunk_000002.npz", allow_pickle=False) as z:
        assert z["images"].shape == (8, 8, 8, 3) and z["indices"].tolist() == list(range(32, 40))
    sample_summary = json.loads((sample_dir / "_MANIFEST.json").read_text())["summary"]
    assert sample_summary["nfe_per_image"] == 8 and sample_summary["images_per_s"] > 0
    from PIL import Image

    with Image.open(sample_dir / "grid.png") as grid:  # 40 images of 8 px, 7 columns, x8 for display
        assert grid.size == (8 * (7 * 9 + 1), 8 * (6 * 9 + 1))

    evaluation = json.loads((_output(workdir, "evaluate") / "_MANIFEST.json").read_text())["summary"]
    assert OFFLINE <= set(evaluation["metrics"])
    protocol = evaluation["protocol"]["evalnet"]
    assert protocol["num_samples"] == 40 and protocol["seed_range"] == [0, 0, 40]
    assert protocol["reference_stats_id"] == index["extractors"]["evalnet"]["stats_id"]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = {r.data.tags.get("pipeline.stage"): r for e in client.search_experiments()
            for r in client.search_runs([e.experiment_id])}
    assert OFFLINE <= set(runs["evaluate"].data.metrics)
    assert runs["evaluate"].data.params["protocol.evalnet.num_samples"] == "40"
    assert runs["evaluate"].data.params["protocol.evalnet.reference_stats_id"] == protocol["reference_stats_id"]
    assert {"images_per_s", "nfe_per_image"} <= set(runs["sample"].data.metrics)
    artifacts = [a.path for a in client.list_artifacts(runs["sample"].info.run_id)]
    assert "grid.png" in artifacts

    # where every unit of work ran (Ray node id, node type, device): in the outputs and on the stage runs
    described = json.loads((sample_dir / "samples.json").read_text())
    assert [u["chunk"] for u in described["units"]] == list(chunks) and sum(described["nodes"].values()) == 3
    assert all(u["node_id"] and "node_type" in u and u["device"] == "cpu" for u in described["units"])
    assert sorted(os.listdir(sample_dir / "units")) == [name.replace(".npz", ".json") for name in chunks]
    evaluated = json.loads((_output(workdir, "evaluate") / "metrics.json").read_text())
    for units, images in ((evaluated["units"], 40), (index["units"], 300)):
        assert units and all(u["node_id"] and u["device"] == "cpu" for u in units)
        assert sum(u["num_images"] for u in units) == images
    counts = {"sample": 3, "evaluate": len(evaluated["units"]), "reference_stats": len(index["units"])}
    for stage, count in counts.items():
        tags = runs[stage].data.tags
        assert sum(json.loads(tags["units.nodes"]).values()) == count, stage
        assert sum(json.loads(tags["units.node_types"]).values()) == count, stage

    # An interrupted sample run: its partial output holds two of the three chunks (and a torn
    # temporary file). The re-run generates only the missing chunk; the result is byte-identical.
    key = sample_dir.name
    partial = sample_dir.parent / f"{key}.partial"
    partial.mkdir()
    for name in ("chunk_000000.npz", "chunk_000002.npz"):
        shutil.copy(sample_dir / name, partial / name)
    (partial / "chunk_000001.npz.tmp-0000abcd").write_bytes(b"torn")
    shutil.rmtree(sample_dir)
    assert run_pipeline("--stages", "sample", *SMALL, stage_modules=STAGES) == 0
    printed = capsys.readouterr().out
    assert "resuming its partial output" in printed and "kept 2 of 3 chunks" in printed
    resumed = json.loads((sample_dir / "_MANIFEST.json").read_text())["summary"]
    assert resumed["generated_images"] == 16 and resumed["reused_chunks"] == 2
    assert _chunks(sample_dir) == chunks
    assert run_pipeline("--stages", "sample,evaluate", *SMALL, stage_modules=STAGES) == 0  # all cached
    assert "(5 to run" not in capsys.readouterr().out
