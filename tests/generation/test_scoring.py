"""Scoring library: extractors per config, references on disk, in-memory scores with protocol."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from pipeline.generation import (SamplerConfig, generate, load_models, load_references, make_extractors,
                                 protocol_params, score, seed_range)
from pipeline.metrics import FeatureStats, InceptionWeightsMissing
from tests.generation.conftest import real_images


def eval_cfg(**kw):
    base = dict(extractors=["evalnet"], inception_weights=None, require_inception=False, num_reference=None,
                pr_neighbours=3, batch_size=16)
    return SimpleNamespace(**{**base, **kw})


def test_inception_without_weights_is_skipped_with_a_note_or_fails_when_required(tiny_models, tmp_path):
    missing = str(tmp_path / "nowhere" / "inception-2015-12-05.pt")
    extractors, notes = make_extractors(eval_cfg(extractors=["evalnet", "inception"], inception_weights=missing),
                                        tiny_models["evalnet"])
    assert [e.name for e in extractors] == ["evalnet"]
    assert len(notes) == 1 and "inception skipped" in notes[0] and "eval.inception_weights" in notes[0]
    with pytest.raises(InceptionWeightsMissing, match="inception-2015-12-05.pt"):
        make_extractors(eval_cfg(extractors=["evalnet", "inception"], inception_weights=missing, require_inception=True),
                        tiny_models["evalnet"])
    with pytest.raises(ValueError, match="no feature extractor"):
        make_extractors(eval_cfg(extractors=["inception"], inception_weights=missing), tiny_models["evalnet"])


def test_references_round_trip_and_are_checked(tiny_references):
    refs = load_references(tiny_references)
    assert list(refs) == ["evalnet"] and isinstance(refs["evalnet"], FeatureStats)
    assert refs["evalnet"].num_samples == 64


def test_real_images_score_better_than_samples_and_carry_their_protocol(tiny_models, tiny_references):
    cfg = eval_cfg()
    extractors, _ = make_extractors(cfg, tiny_models["evalnet"])
    refs = load_references(tiny_references)
    images, labels = real_images(64, seed=7)  # fresh draws of the reference distribution
    real_metrics, protocol = score(images, labels, extractors, refs, cfg, seed_range(7, 64))
    trial = SamplerConfig(guidance="cfg", strength=1.0, steps=4, seed=0)
    generated, gen_labels = generate(trial, load_models(trial, tiny_models["diffusion"]), range(64), 32)
    gen_metrics, _ = score(generated, gen_labels, extractors, refs, cfg, seed_range(0, 64))
    for m in (real_metrics, gen_metrics):
        assert {"fd_evalnet", "is_evalnet", "precision_evalnet", "recall_evalnet", "kid_evalnet_mean",
                "class_accuracy"} <= set(m)
        assert all(np.isfinite(v) for v in m.values())
    assert real_metrics["fd_evalnet"] < gen_metrics["fd_evalnet"]
    assert protocol["evalnet"]["num_samples"] == 64 and protocol["evalnet"]["pr_k"] == 3
    assert protocol["evalnet"]["reference_stats_id"] == refs["evalnet"].stats_id
    assert protocol["evalnet"]["seed_range"] == [7, 0, 64]
    params = protocol_params(protocol)
    assert params["protocol.evalnet.extractor"] == "evalnet" and params["protocol.evalnet.seed_range"] == "[7, 0, 64]"


def test_with_inception_weights_both_feature_spaces_are_scored(tiny_models, monkeypatch, tmp_path):
    """clean-fid's Inception is replaced by a tiny network on the same clean-resize path (the real
    weights cannot be downloaded here); the metrics get clean-fid's names and their own protocol."""
    import pipeline.generation.scoring as scoring
    from pipeline.metrics import CleanResizeExtractor, batches_from_arrays
    from tests.generation.conftest import directory
    from tests.metrics.conftest import TinyCleanNet

    asked = []

    def fake_inception(weights, device="cpu"):
        asked.append(weights)
        return CleanResizeExtractor(TinyCleanNet(), name="inception", feature_dim=12, device=device)

    monkeypatch.setattr(scoring, "inception_extractor", fake_inception)
    cfg = eval_cfg(extractors=["evalnet", "inception"], inception_weights="/data/inception-2015-12-05.pt")
    extractors, notes = make_extractors(cfg, tiny_models["evalnet"])
    assert [e.name for e in extractors] == ["evalnet", "inception"] and not notes
    assert asked == ["/data/inception-2015-12-05.pt"]

    real, real_labels = real_images(48)
    index = scoring.write_references(directory(tmp_path), scoring.reference_stats(
        extractors, batches_from_arrays(real, real_labels, 16)))
    assert set(index) == {"evalnet", "inception"}
    refs = load_references(str(tmp_path))
    images, labels = real_images(48, seed=9)
    metrics, protocol = score(images, labels, extractors, refs, cfg, seed_range(9, 48))
    assert {"fid", "kid_mean", "precision_inception", "recall_inception", "fd_evalnet", "class_accuracy"} <= set(metrics)
    assert protocol["inception"]["reference_stats_id"] == index["inception"]["stats_id"]
    assert protocol["inception"]["extractor"] == "inception" and protocol["evalnet"]["extractor"] == "evalnet"


def test_references_and_models_read_from_a_store_uri_leave_no_temporary_files(tiny_references, tiny_models,
                                                                              tmp_path, monkeypatch):
    import tempfile

    from pipeline.weights import load_classifier
    from pipeline.weights import load_evalnet

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where a temporary copy would go
    by_uri = load_references(f"file://{tiny_references}")
    assert by_uri["evalnet"].stats_id == load_references(tiny_references)["evalnet"].stats_id
    load_evalnet(f"file://{tiny_models['evalnet']}")
    load_classifier(f"file://{tiny_models['classifier']}")
    assert list(scratch.iterdir()) == []
