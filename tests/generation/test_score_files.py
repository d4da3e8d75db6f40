"""Samples from other codebases: a PNG folder and an ADM .npz score exactly like the in-memory
path, through the command line."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from pipeline.generation import SamplerConfig, generate, load_models, load_references, make_extractors, score
from pipeline.generation.score_files import main
from pipeline.metrics import write_png_folder


def test_png_folder_and_npz_give_the_in_memory_numbers(tiny_models, tiny_references, tmp_path, capsys):
    trial = SamplerConfig(guidance="none", steps=3, seed=1)
    images, labels = generate(trial, load_models(trial, tiny_models["diffusion"]), range(40), 40)
    cfg = SimpleNamespace(extractors=["evalnet"], inception_weights=None, require_inception=False,
                          pr_neighbours=3, batch_size=16)
    extractors, _ = make_extractors(cfg, tiny_models["evalnet"])
    expected, protocol = score(images, labels, extractors, load_references(tiny_references), cfg, [1, 0, 40])

    np.savez(tmp_path / "samples.npz", arr_0=images, arr_1=labels)
    assert write_png_folder([images], tmp_path / "pngs") == 40
    np.save(tmp_path / "labels.npy", labels)
    common = ["--reference", tiny_references, "--evalnet", tiny_models["evalnet"], "--batch-size", "16",
              "--seed-range", "1,0,40"]
    for source in ([str(tmp_path / "samples.npz")], [str(tmp_path / "pngs"), "--labels", str(tmp_path / "labels.npy")]):
        assert main([*source, *common]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["metrics"].keys() == expected.keys()
        for key, value in expected.items():
            assert result["metrics"][key] == pytest.approx(value, rel=1e-12, abs=1e-12), key
        assert result["protocol"]["evalnet"] == protocol["evalnet"]

    assert main([str(tmp_path / "pngs"), *common]) == 0  # no labels: everything but class accuracy
    assert set(json.loads(capsys.readouterr().out)["metrics"]) == set(expected) - {
        "class_accuracy", "class_accuracy_ci_low", "class_accuracy_ci_high"}
    assert main([str(tmp_path / "missing.npz"), *common]) == 2
