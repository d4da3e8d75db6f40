"""clean-fid's own code path (mode "clean") with a custom feature extractor agrees with
the streaming computation on the same images and the same network.

Apples to apples: clean-fid reads each PNG as RGB uint8, resizes it to 299x299 with PIL
bicubic on float values (cleanfid.resize.build_resizer("clean")) and hands float [0, 255]
NCHW batches to `custom_feat_extractor`. CleanResizeExtractor applies that same resizer to
the in-memory uint8 images and calls the same network, so features agree to float round-off.
"""
import numpy as np
import pytest

from pipeline.metrics import (CleanResizeExtractor, TorchModuleExtractor, batches_from_arrays, compute_feature_stats,
                              evaluate_samples, frechet_distance, kid, write_png_folder)
from pipeline.metrics.cleanfid_compat import (cleanfid_adapter, cleanfid_fid_folders, cleanfid_fid_generator,
                                              cleanfid_folder_features, cleanfid_kid_folders)

from .conftest import quadrant_images


@pytest.fixture
def image_sets(tmp_path):
    real, real_labels = quadrant_images(48, size=12, seed=10)
    fake, fake_labels = quadrant_images(48, size=12, seed=11)
    fake[:, :3] = 255 - fake[:, :3]  # make the sets differ
    write_png_folder(batches_from_arrays(real, real_labels, 16), tmp_path / "real")
    write_png_folder(batches_from_arrays(fake, fake_labels, 16), tmp_path / "fake")
    return real, fake, tmp_path / "real", tmp_path / "fake"


def test_cleanfid_folder_features_equal_streamed_features(image_sets, tiny_clean_net):
    real, _, real_dir, _ = image_sets
    theirs = cleanfid_folder_features(real_dir, tiny_clean_net, batch_size=10)
    ours, _ = CleanResizeExtractor(tiny_clean_net, "tiny", 12, batch_size=7)(real)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_cleanfid_compute_fid_agrees_with_streaming(image_sets, tiny_clean_net):
    real, fake, real_dir, fake_dir = image_sets
    theirs = cleanfid_fid_folders(fake_dir, real_dir, tiny_clean_net, batch_size=16)

    ex = CleanResizeExtractor(tiny_clean_net, "tiny", 12, batch_size=16)
    ref = compute_feature_stats(ex, batches_from_arrays(real, batch_size=20), keep=None)["tiny"]
    res = evaluate_samples(ex, batches_from_arrays(fake, batch_size=20), ref, keep=None,
                           kid_subsets=3, kid_subset_size=40)["tiny"]
    assert theirs > 0.05  # a non-trivial distance
    assert res.metrics["fd_tiny"] == pytest.approx(theirs, rel=1e-6)


def test_cleanfid_generator_route_agrees(image_sets, tiny_clean_net):
    real, fake, real_dir, _ = image_sets
    # 48 images in batches of 10 -> clean-fid pads the last call and truncates to num_gen
    theirs = cleanfid_fid_generator(batches_from_arrays(fake, batch_size=13), real_dir, num_gen=48,
                                    feat_model=tiny_clean_net, batch_size=10)
    ex = CleanResizeExtractor(tiny_clean_net, "tiny", 12)
    fr, _ = ex(fake)
    rr, _ = ex(real)
    ours = frechet_distance(fr.mean(0), np.cov(fr.astype(np.float64), rowvar=False),
                            rr.mean(0), np.cov(rr.astype(np.float64), rowvar=False))
    assert ours == pytest.approx(theirs, rel=1e-6)


def test_cleanfid_kid_agrees_on_full_subsets(image_sets, tiny_clean_net):
    # one subset of all 48 + 48 points: clean-fid's random choice is only a permutation,
    # so its RNG does not matter and the estimates must agree
    real, fake, real_dir, fake_dir = image_sets
    theirs = cleanfid_kid_folders(real_dir, fake_dir, tiny_clean_net, num_subsets=1, max_subset_size=48)
    ex = CleanResizeExtractor(tiny_clean_net, "tiny", 12)
    ours, _ = kid(ex(real)[0], ex(fake)[0], num_subsets=1, subset_size=48)
    assert theirs > 1e-3
    assert ours == pytest.approx(theirs, rel=1e-6)


def test_evalnet_inside_cleanfid_matches_streaming_fd_evalnet(image_sets, tiny_classifier):
    # The evaluation classifier run by clean-fid (native size, its own preprocessing) gives
    # the same Frechet distance as the streaming fd_evalnet path: the comparison the
    # streaming-vs-folder benchmark makes.
    real, fake, real_dir, fake_dir = image_sets
    ex = TorchModuleExtractor(tiny_classifier, "evalnet")
    feat_model, fn_resize = cleanfid_adapter(ex)
    theirs = cleanfid_fid_folders(fake_dir, real_dir, feat_model, custom_fn_resize=fn_resize)
    ref = compute_feature_stats(ex, batches_from_arrays(real, batch_size=20), keep=None)["evalnet"]
    res = evaluate_samples(ex, batches_from_arrays(fake, batch_size=20), ref, keep=None,
                           kid_subsets=3, kid_subset_size=40)["evalnet"]
    assert theirs > 0.05
    assert res.metrics["fd_evalnet"] == pytest.approx(theirs, rel=1e-6)
