"""The same images as an in-memory stream, a PNG folder and an ADM-style .npz give the
same features and the same metrics."""
import numpy as np
import pytest
import torch

from pipeline.metrics import (TorchModuleExtractor, batches_from_arrays, batches_from_npz,
                              batches_from_png_folder, compute_feature_stats, evaluate_samples,
                              write_png_folder)
from pipeline.metrics.sources import to_nhwc_rgb_uint8

from .conftest import quadrant_images


def test_layouts_and_grey():
    x = np.random.default_rng(0).integers(0, 256, size=(4, 5, 6, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_nhwc_rgb_uint8(torch.from_numpy(x).permute(0, 3, 1, 2)), x)
    g = x[..., 0]
    np.testing.assert_array_equal(to_nhwc_rgb_uint8(g), np.repeat(g[..., None], 3, -1))
    np.testing.assert_array_equal(to_nhwc_rgb_uint8(g[:, None]), np.repeat(g[..., None], 3, -1))
    with pytest.raises(TypeError):
        to_nhwc_rgb_uint8(x.astype(np.float32))


def test_png_folder_and_npz_read_back_the_same_images(tmp_path):
    images, labels = quadrant_images(23, size=12)
    n = write_png_folder(batches_from_arrays(images, labels, batch_size=10), tmp_path / "png")
    assert n == 23
    from_png = list(batches_from_png_folder(tmp_path / "png", batch_size=7, labels=labels))
    np.testing.assert_array_equal(np.concatenate([b.images for b in from_png]), images)
    np.testing.assert_array_equal(np.concatenate([b.labels for b in from_png]), labels)
    np.savez(tmp_path / "samples.npz", images, labels)  # arr_0, arr_1 as ADM writes them
    from_npz = list(batches_from_npz(tmp_path / "samples.npz", batch_size=5))
    np.testing.assert_array_equal(np.concatenate([b.images for b in from_npz]), images)
    np.testing.assert_array_equal(np.concatenate([b.labels for b in from_npz]), labels)


@pytest.fixture
def evalnet(tiny_classifier):
    return TorchModuleExtractor(tiny_classifier, "evalnet", batch_size=16)


def test_bundle_same_numbers_from_memory_png_and_npz(tmp_path, evalnet):
    real, real_labels = quadrant_images(300, seed=1)
    fake, fake_labels = quadrant_images(120, seed=2)
    ref = compute_feature_stats(evalnet, batches_from_arrays(real, real_labels, 64), keep=None)["evalnet"]

    kw = dict(keep=100, seed=3, is_splits=2, kid_subsets=10, kid_subset_size=50, seed_range=[0, 120])
    mem = evaluate_samples(evalnet, batches_from_arrays(fake, fake_labels, 50), ref, **kw)["evalnet"]
    write_png_folder(batches_from_arrays(fake, fake_labels, 50), tmp_path / "png")
    png = evaluate_samples(evalnet, batches_from_png_folder(tmp_path / "png", 33, labels=fake_labels),
                           ref, **kw)["evalnet"]
    np.savez(tmp_path / "s.npz", fake, fake_labels)
    npz = evaluate_samples(evalnet, batches_from_npz(tmp_path / "s.npz", 17), ref, **kw)["evalnet"]

    expected_keys = {"fd_evalnet", "kid_evalnet_mean", "kid_evalnet_std", "precision_evalnet",
                     "recall_evalnet", "is_evalnet", "is_evalnet_std", "class_accuracy"}
    assert set(mem.metrics) == expected_keys
    assert not any(k.startswith("fid") for k in mem.metrics)
    for other in (png, npz):
        assert other.metrics.keys() == mem.metrics.keys()
        for k, v in mem.metrics.items():
            assert other.metrics[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k
    assert mem.protocol["extractor"] == "evalnet"
    assert mem.protocol["num_samples"] == 120
    assert mem.protocol["reference_stats_id"] == ref.stats_id
    assert mem.protocol["seed_range"] == [0, 120]
    assert mem.protocol["pr_k"] == 3
    # the tiny classifier reads the brightest quadrant: samples are classified as their label
    assert mem.metrics["class_accuracy"] == 1.0
    assert 3.0 < mem.metrics["is_evalnet"] <= 4.0


def test_bundle_against_itself_is_perfect(evalnet):
    real, labels = quadrant_images(200, seed=5)
    ref = compute_feature_stats(evalnet, batches_from_arrays(real, labels, 64), keep=None)["evalnet"]
    res = evaluate_samples(evalnet, batches_from_arrays(real, labels, 64), ref, keep=None,
                           kid_subsets=5, kid_subset_size=100)["evalnet"].metrics
    assert abs(res["fd_evalnet"]) < 1e-8
    assert res["precision_evalnet"] == 1.0 and res["recall_evalnet"] == 1.0


def test_reference_of_another_feature_space_is_refused(evalnet):
    real, labels = quadrant_images(40, seed=6)
    ref = compute_feature_stats(evalnet, batches_from_arrays(real, labels, 64))["evalnet"]
    other = TorchModuleExtractor(evalnet.module, "othernet")
    with pytest.raises(KeyError):
        evaluate_samples(other, batches_from_arrays(real, labels), {"evalnet": ref})
    with pytest.raises(ValueError, match="cannot be compared"):
        evaluate_samples(other, batches_from_arrays(real, labels), ref)
