import numpy as np
import torch

from pipeline.metrics import CleanResizeExtractor, FeatureExtractor, TorchModuleExtractor


class Recorder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inputs = []

    def forward(self, x):
        self.inputs.append(x.clone())
        assert not torch.is_grad_enabled()
        return x.flatten(1)[:, :5], x.mean(dim=(2, 3))


def test_module_extractor_scales_to_minus_one_one_and_batches():
    rec = Recorder()
    ex = TorchModuleExtractor(rec, "evalnet", batch_size=3)
    imgs = np.zeros((7, 4, 4, 3), dtype=np.uint8)
    imgs[0] = 255
    feats, logits = ex(torch.from_numpy(imgs).permute(0, 3, 1, 2))  # NCHW tensor input
    assert [t.shape[0] for t in rec.inputs] == [3, 3, 1]
    x = torch.cat(rec.inputs)
    assert x.shape == (7, 3, 4, 4)
    assert x[0].min() == 1.0 and x[1:].max() == -1.0
    assert feats.shape == (7, 5) and feats.dtype == np.float32 and logits.shape == (7, 3)
    assert isinstance(ex, FeatureExtractor) and ex.feature_dim == 5


def test_module_extractor_resizes_and_greys():
    rec = Recorder()
    ex = TorchModuleExtractor(rec, "evalnet", input_size=8, in_channels=1)
    imgs = np.full((2, 16, 16, 3), 255, dtype=np.uint8)
    ex(imgs)
    assert rec.inputs[0].shape == (2, 1, 8, 8)
    torch.testing.assert_close(rec.inputs[0], torch.ones(2, 1, 8, 8))


def test_features_do_not_depend_on_batch_size(tiny_classifier):
    imgs = np.random.default_rng(0).integers(0, 256, size=(20, 8, 8, 3), dtype=np.uint8)
    a = TorchModuleExtractor(tiny_classifier, batch_size=20)(imgs)[0]
    b = TorchModuleExtractor(tiny_classifier, batch_size=3)(imgs)[0]
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_clean_resize_extractor_uses_cleanfid_resize(tiny_clean_net):
    from cleanfid.resize import build_resizer

    imgs = np.random.default_rng(1).integers(0, 256, size=(3, 10, 10, 3), dtype=np.uint8)
    seen = []
    ex = CleanResizeExtractor(lambda x: seen.append(x) or tiny_clean_net(x), "tiny", 12, batch_size=2)
    feats, logits = ex(imgs)
    assert feats.shape == (3, 12) and logits is None
    resize = build_resizer("clean")
    expected = torch.from_numpy(np.stack([resize(im) for im in imgs])).permute(0, 3, 1, 2)
    torch.testing.assert_close(torch.cat(seen), expected, rtol=0, atol=0)
