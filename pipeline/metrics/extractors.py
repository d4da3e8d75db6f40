"""Feature extractors: uint8 images in, (features, logits or None) out.

Every extractor has
    name          the feature space, used in metric names ("inception", "evalnet", ...)
    feature_dim   size of the feature vectors
    predicts_labels  True when its logits are over the dataset's own classes (then the
                  class accuracy of conditional samples can be measured)
    __call__(images) -> (features float32 (n, d), logits float32 (n, c) or None)
where images are a uint8 batch, numpy or torch, NHWC or NCHW (see sources.to_nhwc_rgb_uint8).

Two implementations here:
    TorchModuleExtractor  any torch module returning (penultimate features, logits), e.g.
                          the pipeline's clean evaluation classifier;
    CleanResizeExtractor  clean-fid's "clean" preprocessing (PIL bicubic resize to
                          299 x 299 on float values, no quantisation, see
                          cleanfid.resize.build_resizer) followed by a network that takes
                          float images in [0, 255]; inception.py builds clean-fid's Inception
                          on it. The same network passed to clean-fid as a
                          `custom_feat_extractor` sees exactly the same inputs.
"""
from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from .sources import to_nhwc_rgb_uint8

# Function-local imports: they bring in clean-fid, which importing this module does not need.

__all__ = ["FeatureExtractor", "TorchModuleExtractor", "CleanResizeExtractor", "split_output"]


@runtime_checkable
class FeatureExtractor(Protocol):
    name: str
    feature_dim: int
    predicts_labels: bool

    def __call__(self, images) -> tuple[np.ndarray, np.ndarray | None]: ...


def split_output(out) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(features, logits) from a module output: a pair, a dict with those keys, or a tensor."""
    if isinstance(out, torch.Tensor):
        return out, None
    if isinstance(out, dict):
        return out["features"], out.get("logits")
    if isinstance(out, (tuple, list)) and len(out) == 2:
        return out[0], out[1]
    raise TypeError(f"feature network must return features or (features, logits), got {type(out)}")


def _numpy(t: torch.Tensor | None) -> np.ndarray | None:
    if t is None:
        return None
    return t.detach().to("cpu", torch.float32).reshape(t.shape[0], -1).numpy()


def run_batched(network: Callable, preprocess: Callable, images, batch_size: int,
                feature_dim: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(features, logits or None) of `network(preprocess(batch))` over `images`, in batches."""
    x_all = to_nhwc_rgb_uint8(images)
    feats, logits = [], []
    with torch.inference_mode():
        for start in range(0, x_all.shape[0], batch_size):
            f, lg = split_output(network(preprocess(x_all[start:start + batch_size])))
            feats.append(_numpy(f))
            logits.append(_numpy(lg))
    have_logits = bool(logits) and all(lg is not None for lg in logits)
    return (np.concatenate(feats) if feats else np.zeros((0, feature_dim), np.float32),
            np.concatenate(logits) if have_logits else None)


class TorchModuleExtractor:
    """Wraps a torch module whose forward returns (penultimate features, logits).

    Images are converted from uint8 to float in [-1, 1] (x / 127.5 - 1, the diffusion
    models' convention), to `in_channels` (1: mean of RGB, exact for grey images stored as
    RGB), resized to `input_size` (bilinear, antialiased) when given and different, and
    run in sub-batches of `batch_size` under torch.inference_mode on `device`.
    """

    def __init__(self, module: torch.nn.Module, name: str = "evalnet", *,
                 feature_dim: int | None = None, input_size: int | tuple[int, int] | None = None,
                 in_channels: int = 3, batch_size: int = 256, device: str | torch.device = "cpu",
                 predicts_labels: bool = True):
        if in_channels not in (1, 3):
            raise ValueError("in_channels must be 1 or 3")
        self.module = module.to(device).eval()
        self.name = name
        self.device = torch.device(device)
        self.input_size = (input_size, input_size) if isinstance(input_size, int) else input_size
        self.in_channels = in_channels
        self.batch_size = batch_size
        self.predicts_labels = predicts_labels
        self._feature_dim = feature_dim

    @property
    def feature_dim(self) -> int:
        if self._feature_dim is None:
            size = self.input_size or (32, 32)
            feats, _ = self(np.zeros((1, *size, 3), dtype=np.uint8))
            self._feature_dim = int(feats.shape[1])
        return self._feature_dim

    def preprocess(self, images_nhwc: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(images_nhwc).to(self.device).permute(0, 3, 1, 2).float()
        return self.preprocess_float(x)

    def preprocess_float(self, x: torch.Tensor) -> torch.Tensor:
        """Float NCHW images with values in [0, 255] -> the module's input."""
        x = x.to(self.device, torch.float32) / 127.5 - 1.0
        if self.in_channels == 1:
            x = x.mean(dim=1, keepdim=True)
        if self.input_size is not None and tuple(x.shape[-2:]) != tuple(self.input_size):
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False,
                              antialias=True)
        return x

    def __call__(self, images) -> tuple[np.ndarray, np.ndarray | None]:
        feats, logits = run_batched(self.module, self.preprocess, images, self.batch_size, self._feature_dim or 0)
        if self._feature_dim is None and len(feats):
            self._feature_dim = int(feats.shape[1])
        return feats, logits


def clean_resizer(size: int = 299) -> Callable[[np.ndarray], np.ndarray]:
    """clean-fid's "clean" resize: HWC uint8 -> HWC float32 in [0, 255] at size x size."""
    from cleanfid.resize import build_resizer, make_resizer

    if size == 299:
        return build_resizer("clean")
    return make_resizer("PIL", False, "bicubic", (size, size))


class CleanResizeExtractor:
    """clean-fid "clean" preprocessing + a network on float [0, 255] NCHW images.

    `network(x)` returns features, or (features, logits). This is exactly the input that
    clean-fid gives to its Inception network (and to a custom_feat_extractor) after
    reading image files: the images are resized one by one with PIL bicubic on float
    values, clipped to [0, 255], stacked as float32 NCHW.
    """

    def __init__(self, network: Callable, name: str, feature_dim: int, *, size: int = 299,
                 batch_size: int = 64, device: str | torch.device = "cpu",
                 predicts_labels: bool = False):
        self.network = network
        self.name = name
        self.feature_dim = feature_dim
        self.size = size
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.predicts_labels = predicts_labels
        self._resize = clean_resizer(size)

    def preprocess(self, images_nhwc: np.ndarray) -> torch.Tensor:
        resized = np.stack([self._resize(img) for img in images_nhwc]).astype(np.float32)
        return torch.from_numpy(resized).permute(0, 3, 1, 2).contiguous().to(self.device)

    def __call__(self, images) -> tuple[np.ndarray, np.ndarray | None]:
        return run_batched(self.network, self.preprocess, images, self.batch_size, self.feature_dim)
