"""Fixtures for the metrics tests: no network, tiny deterministic feature networks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F


class DownloadAttempted(AssertionError):
    pass


def _refuse(*args, **kwargs):
    raise DownloadAttempted(f"a metrics test tried to download something: {args!r}")


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    """Every metrics test runs with clean-fid's download helpers, urllib and requests
    replaced by functions that fail loudly."""
    import urllib.request

    import cleanfid.downloads_helper as dh
    import cleanfid.features as cf_features
    import cleanfid.inception_torchscript as cf_ts
    import requests

    for mod in (dh, cf_ts):
        monkeypatch.setattr(mod, "check_download_inception", _refuse)
    for mod in (dh, cf_features):
        monkeypatch.setattr(mod, "check_download_url", _refuse)
    monkeypatch.setattr(dh, "download_google_drive", _refuse)
    monkeypatch.setattr(urllib.request, "urlopen", _refuse)
    monkeypatch.setattr(requests, "get", _refuse)
    monkeypatch.setattr(requests.Session, "request", _refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", _refuse)
    yield


class TinyCleanNet(torch.nn.Module):
    """Deterministic stand-in for a clean-fid feature network: float [0, 255] NCHW 299x299
    in, 12-d features out (average-pooled to 6x6, fixed random projection, tanh)."""

    def __init__(self, dim: int = 12):
        super().__init__()
        g = torch.Generator().manual_seed(1234)
        self.register_buffer("proj", torch.randn(3 * 6 * 6, dim, generator=g) / 6.0)

    def forward(self, x):
        assert x.shape[-2:] == (299, 299) and x.dtype == torch.float32
        p = F.adaptive_avg_pool2d(x / 255.0 - 0.5, 6).flatten(1)
        return torch.tanh(p @ self.proj * 4.0)


class TinyClassifier(torch.nn.Module):
    """Deterministic stand-in for the evaluation classifier: input in [-1, 1], returns
    (8-d features, logits over 4 classes); class = which quadrant is brightest."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(7)
        self.mix = torch.nn.Parameter(torch.randn(12, 8, generator=g) / 3.0, requires_grad=False)

    def forward(self, x):
        q = F.adaptive_avg_pool2d(x, 2).flatten(1)  # (n, 3*4) channel-major quadrants
        quad = q.view(-1, 3, 4).mean(1)  # (n, 4) brightness per quadrant
        feats = torch.cat([torch.tanh(q @ self.mix), quad], 1)[:, :8]
        return feats, 10.0 * quad


def quadrant_images(n: int, size: int = 16, seed: int = 0):
    """uint8 NHWC images whose label (0..3) is the brightest quadrant, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=n)
    imgs = rng.integers(0, 90, size=(n, size, size, 3)).astype(np.int64)
    h = size // 2
    for i, c in enumerate(labels):
        r, col = divmod(int(c), 2)
        imgs[i, r * h:(r + 1) * h, col * h:(col + 1) * h] += 120 + rng.integers(0, 40)
    return np.clip(imgs, 0, 255).astype(np.uint8), labels.astype(np.int64)


@pytest.fixture
def tiny_clean_net():
    return TinyCleanNet().eval()


@pytest.fixture
def tiny_classifier():
    return TinyClassifier().eval()
