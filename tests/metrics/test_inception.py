"""clean-fid's Inception: missing weights give a clear error and never a download; a
weights file in clean-fid's format is loaded through clean-fid's own network class."""
import numpy as np
import pytest
import torch

import pipeline.metrics.inception as inception_mod
from pipeline.metrics import (INCEPTION_FILENAME, InceptionWeightsMissing, batches_from_arrays,
                              compute_feature_stats, evaluate_samples, inception_extractor,
                              load_cleanfid_inception)
from pipeline.metrics.cleanfid_compat import cleanfid_fid_folders
from pipeline.metrics.offline import metric_names

from .conftest import DownloadAttempted, quadrant_images


def _assert_helpful(err: InceptionWeightsMissing, looked_at):
    msg = str(err)
    assert INCEPTION_FILENAME in msg
    assert "eval.inception_weights" in msg
    assert str(looked_at) in msg
    assert "/tmp" in msg or "./" in msg  # clean-fid's own location


def test_configured_path_missing(tmp_path):
    missing = tmp_path / "nowhere" / INCEPTION_FILENAME
    with pytest.raises(InceptionWeightsMissing) as info:
        load_cleanfid_inception(missing)
    _assert_helpful(info.value, missing)
    with pytest.raises(InceptionWeightsMissing):
        inception_extractor(tmp_path)  # a directory without the file
    assert not missing.exists()


def test_default_location_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(inception_mod, "cleanfid_default_weights_dir", lambda: tmp_path)
    with pytest.raises(InceptionWeightsMissing) as info:
        inception_extractor(None)
    _assert_helpful(info.value, tmp_path / INCEPTION_FILENAME)
    assert not (tmp_path / INCEPTION_FILENAME).exists()


def test_cleanfid_helpers_do_not_download_either(tmp_path):
    with pytest.raises(InceptionWeightsMissing):
        cleanfid_fid_folders(tmp_path, tmp_path, inception_weights=str(tmp_path / INCEPTION_FILENAME))


def test_the_guard_is_what_stops_the_download(tmp_path):
    # Without our check, clean-fid's default path would try to download: the test fixture
    # turns that into DownloadAttempted, proving the fixture is live.
    from cleanfid.inception_torchscript import InceptionV3W

    with pytest.raises(DownloadAttempted):
        InceptionV3W(str(tmp_path), download=True)


def test_file_with_another_name_is_explained(tmp_path):
    other = tmp_path / "inception.pt"
    other.write_bytes(b"not really")
    with pytest.raises(InceptionWeightsMissing, match="named inception-2015-12-05.pt"):
        load_cleanfid_inception(other)


class _FakeInceptionLayers(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2048, 1)

    def forward(self, x):
        return self.conv(torch.nn.functional.adaptive_avg_pool2d(x, 1))


class _FakeInception(torch.nn.Module):
    """Same attributes as the TorchScript Inception that clean-fid loads: `layers` (pool
    features) and `output` (the 1008-way classifier)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layers = _FakeInceptionLayers()
        self.output = torch.nn.Linear(2048, 1008)

    def forward(self, x):
        return self.output(self.layers(x).flatten(1))


@pytest.fixture
def fake_weights(tmp_path):
    torch.jit.script(_FakeInception()).save(str(tmp_path / INCEPTION_FILENAME))
    return tmp_path / INCEPTION_FILENAME


def test_weights_in_cleanfid_format_go_through_cleanfid_class(fake_weights):
    from cleanfid.inception_torchscript import InceptionV3W

    for configured in (fake_weights, fake_weights.parent):  # the file or its directory
        ex = inception_extractor(configured, batch_size=4)
        assert isinstance(ex.network.model, InceptionV3W)
    assert ex.name == "inception" and ex.feature_dim == 2048
    real, _ = quadrant_images(6, size=8, seed=1)
    feats, logits = ex(real)
    assert feats.shape == (6, 2048) and logits.shape == (6, 1008)
    # IS logits: the output layer without its bias, as the original TF Inception Score
    w = ex.network.model.base.output.weight.detach().numpy()
    np.testing.assert_allclose(logits, feats @ w.T, rtol=1e-4, atol=1e-4)
    assert metric_names("inception")["fd"] == "fid"
    assert metric_names("evalnet")["fd"] == "fd_evalnet"


@pytest.mark.slow
def test_inception_bundle_uses_fid_names(fake_weights):
    # ~30 s on 2 shared cores: scipy's sqrtm of 2048 x 2048 covariance products
    ex = inception_extractor(fake_weights, batch_size=8)
    real, labels = quadrant_images(24, size=8, seed=1)
    ref = compute_feature_stats(ex, batches_from_arrays(real, labels, 8), keep=None)["inception"]
    res = evaluate_samples(ex, batches_from_arrays(real, labels, 8), ref, keep=None, kid_subsets=2,
                           kid_subset_size=20, is_splits=2)["inception"]
    # FID means clean-fid with its Inception: the conventional names, no class accuracy
    assert {"fid", "kid_mean", "kid_std", "is", "precision_inception", "recall_inception"} <= set(res.metrics)
    assert not any(k.startswith("class_accuracy") for k in res.metrics)
    # 24 samples in 2048 dims: singular covariances, eps * I offset => a bias of order d * eps
    assert abs(res.metrics["fid"]) < 1e-2
