"""The trained-model format every downstream stage reads: save, load, same outputs."""
import pyarrow.fs as pafs
import pytest
import torch

from pipeline.store import Directory
from pipeline.weights import (load_classifier, load_diffusion, load_guide, guide_location, save_classifier,
                              save_diffusion)
from pipeline.nets.classifier import NoisyClassifier
from pipeline.nets.unet import UNet

UNET = dict(image_size=8, in_channels=3, base_channels=16, channel_mult=[1, 2], num_res_blocks=1,
            attention_resolutions=[4], num_head_channels=16, num_classes=10, learn_sigma=True)
DIFFUSION = dict(timesteps=100, schedule="cosine", lambda_min=-20.0, lambda_max=20.0, loss="hybrid")


def _directory(path):
    path.mkdir(parents=True, exist_ok=True)
    return Directory(pafs.LocalFileSystem(), str(path), str(path))


def _randomized(module):
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.05)
    return module


def test_diffusion_model_round_trip(tmp_path):
    net = _randomized(UNet(**UNET)).eval()
    save_diffusion(_directory(tmp_path), net.state_dict(), UNET, DIFFUSION, p_uncond=0.2, nimg=640, role="main")
    save_diffusion(_directory(tmp_path / "guide"), net.state_dict(), UNET, DIFFUSION, p_uncond=0.2, role="guide")
    loaded = load_diffusion(str(tmp_path))
    x, t, y = torch.randn(3, 3, 8, 8), torch.tensor([1, 50, 99]), torch.tensor([0, 3, 10])
    with torch.no_grad():
        assert torch.equal(loaded.net(x, t, y), net(x, t, y))
    assert loaded.p_uncond == 0.2 and loaded.learned_sigma and loaded.num_classes == 10 and loaded.null_label == 10
    assert loaded.schedule.num_train_timesteps == 100 and not loaded.net.training
    assert load_guide(str(tmp_path)).meta["role"] == "guide"
    assert guide_location(str(tmp_path) + "/").endswith("/guide")


def test_classifier_round_trip(tmp_path):
    kwargs = dict(image_size=8, num_classes=10, base_channels=16, channel_mult=[1, 2], num_res_blocks=1,
                  attention_resolutions=[4], num_head_channels=16)
    net = _randomized(NoisyClassifier(**kwargs)).eval()
    save_classifier(_directory(tmp_path), net.state_dict(), kwargs, DIFFUSION, nimg=10)
    loaded = load_classifier(str(tmp_path))
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([5, 80])
    with torch.no_grad():
        assert torch.equal(loaded(x, t), net(x, t))


def test_missing_model_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model.json"):
        load_diffusion(str(tmp_path))
