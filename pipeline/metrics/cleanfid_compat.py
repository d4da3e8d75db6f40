"""FID / KID computed by clean-fid's own functions (mode "clean"), as a cross-check of
the streaming path and for users who want clean-fid's numbers verbatim.

    cleanfid_folder_features  cleanfid.fid.get_folder_features
    cleanfid_fid_folders      cleanfid.fid.compute_fid(fdir1, fdir2, custom_feat_extractor=...)
    cleanfid_fid_generator    cleanfid.fid.compute_fid(gen=..., fdir2=...): generated batches
                              fed through clean-fid's generator route (no PNGs for them)
    cleanfid_generator_features  cleanfid.fid.get_model_features: that in-memory route's
                              features alone (to compare against precomputed statistics)
    cleanfid_kid_folders      clean-fid's features + cleanfid.fid.kernel_distance
    cleanfid_adapter          run a TorchModuleExtractor (the evaluation classifier) inside
                              clean-fid at native size, for same-extractor comparisons

`feat_model` is any callable on float [0, 255] NCHW 299x299 tensors returning features
(clean-fid's `custom_feat_extractor` contract); when None, clean-fid's Inception is loaded
from the configured weights through load_cleanfid_inception, which checks for the file
first and never lets clean-fid download it.
"""
from __future__ import annotations

import os
from typing import Callable, Iterable

import numpy as np
import torch

from .extractors import TorchModuleExtractor, split_output
from .inception import load_cleanfid_inception
from .sources import as_batches

# Function-local imports: they bring in clean-fid, which importing this module does not need.

__all__ = ["cleanfid_folder_features", "cleanfid_fid_folders", "cleanfid_fid_generator", "cleanfid_generator_features",
           "cleanfid_kid_folders", "features_only", "no_resize", "cleanfid_adapter"]


def features_only(network: Callable) -> Callable[[torch.Tensor], torch.Tensor]:
    """Adapt a network returning (features, logits) to clean-fid's features-only contract."""
    def fn(x: torch.Tensor) -> torch.Tensor:
        out = network(x)
        return out[0] if isinstance(out, (tuple, list)) else out
    return fn


def no_resize(img: np.ndarray) -> np.ndarray:
    """A clean-fid `custom_fn_resize` that keeps the native size (float32 HWC in [0, 255])."""
    return np.asarray(img, dtype=np.float32)


def cleanfid_adapter(extractor: TorchModuleExtractor) -> tuple[Callable, Callable]:
    """(custom_feat_extractor, custom_fn_resize) that make clean-fid compute exactly the
    features of a TorchModuleExtractor (e.g. the evaluation classifier): clean-fid keeps
    the native image size (no 299 resize) and the module gets the extractor's own
    preprocessing, so its numbers match the streaming fd_<name> path."""
    def feat_model(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            feats, _ = split_output(extractor.module(extractor.preprocess_float(x)))
        return feats.reshape(feats.shape[0], -1)
    return feat_model, no_resize


def _model(feat_model, inception_weights, device):
    if feat_model is not None:
        return feat_model
    return load_cleanfid_inception(inception_weights, device)


def cleanfid_folder_features(folder: str | os.PathLike, feat_model: Callable | None = None, *,
                             inception_weights: str | None = None, device: str | torch.device = "cpu",
                             batch_size: int = 32, num_workers: int = 0,
                             custom_fn_resize: Callable | None = None) -> np.ndarray:
    from cleanfid import fid

    model = _model(feat_model, inception_weights, device)
    return fid.get_folder_features(str(folder), model, num_workers=num_workers, batch_size=batch_size,
                                   device=torch.device(device), mode="clean", verbose=False,
                                   custom_fn_resize=custom_fn_resize)


def cleanfid_fid_folders(folder_a: str | os.PathLike, folder_b: str | os.PathLike,
                         feat_model: Callable | None = None, *, inception_weights: str | None = None,
                         device: str | torch.device = "cpu", batch_size: int = 32,
                         num_workers: int = 0, custom_fn_resize: Callable | None = None) -> float:
    """clean-fid's FID between two image folders (any extractor via custom_feat_extractor)."""
    from cleanfid import fid

    model = _model(feat_model, inception_weights, device)
    return float(fid.compute_fid(str(folder_a), str(folder_b), mode="clean", custom_feat_extractor=model,
                                 device=torch.device(device), batch_size=batch_size,
                                 num_workers=num_workers, verbose=False,
                                 custom_fn_resize=custom_fn_resize))


class _BatchGenerator:
    """clean-fid's `gen(z)` contract: each call returns `batch_size` images, float NCHW in
    [0, 255]. Our stream is re-cut into batches of exactly that size; the last one is padded
    by repeating its final image, and clean-fid truncates to num_gen."""

    def __init__(self, batches: Iterable, batch_size: int):
        self._it = (b.images for b in as_batches(batches))
        self._buf = np.zeros((0, 0, 0, 3), dtype=np.uint8)
        self.batch_size = batch_size

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        while self._buf.shape[0] < self.batch_size:
            nxt = next(self._it, None)
            if nxt is None:
                break
            self._buf = nxt if self._buf.shape[0] == 0 else np.concatenate([self._buf, nxt])
        if self._buf.shape[0] == 0:
            raise RuntimeError("the image stream ended before clean-fid asked for num_gen images")
        out, self._buf = self._buf[: self.batch_size], self._buf[self.batch_size:]
        if out.shape[0] < self.batch_size:
            pad = np.repeat(out[-1:], self.batch_size - out.shape[0], axis=0)
            out = np.concatenate([out, pad])
        return torch.from_numpy(np.ascontiguousarray(out.transpose(0, 3, 1, 2))).float()


def cleanfid_fid_generator(batches: Iterable, reference_folder: str | os.PathLike, num_gen: int,
                           feat_model: Callable | None = None, *, inception_weights: str | None = None,
                           device: str | torch.device = "cpu", batch_size: int = 32,
                           num_workers: int = 0, custom_fn_resize: Callable | None = None) -> float:
    """clean-fid's FID of `num_gen` images from a batch stream against a folder of real
    images, through clean-fid's generator route (compute_fid(gen=..., fdir2=...))."""
    from cleanfid import fid

    model = _model(feat_model, inception_weights, device)
    gen = _BatchGenerator(batches, batch_size)
    return float(fid.compute_fid(gen=gen, fdir2=str(reference_folder), mode="clean", num_gen=num_gen,
                                 custom_feat_extractor=model, device=torch.device(device),
                                 batch_size=batch_size, num_workers=num_workers, z_dim=1,
                                 verbose=False, custom_fn_resize=custom_fn_resize))


def cleanfid_generator_features(batches: Iterable, num_gen: int, feat_model: Callable | None = None, *,
                                inception_weights: str | None = None, device: str | torch.device = "cpu",
                                batch_size: int = 32, custom_fn_resize: Callable | None = None) -> np.ndarray:
    """clean-fid's features [num_gen, D] of the first ``num_gen`` images of a batch stream, through
    its in-memory generator route (cleanfid.fid.get_model_features, mode "clean")."""
    from cleanfid import fid

    model = _model(feat_model, inception_weights, device)
    return fid.get_model_features(_BatchGenerator(batches, batch_size), model, mode="clean", z_dim=1, num_gen=num_gen,
                                  batch_size=batch_size, device=torch.device(device), verbose=False,
                                  custom_fn_resize=custom_fn_resize)


def cleanfid_kid_folders(folder_a: str | os.PathLike, folder_b: str | os.PathLike,
                         feat_model: Callable | None = None, *, inception_weights: str | None = None,
                         device: str | torch.device = "cpu", batch_size: int = 32, num_workers: int = 0,
                         num_subsets: int = 100, max_subset_size: int = 1000, seed: int = 0,
                         custom_fn_resize: Callable | None = None) -> float:
    """clean-fid's KID between two folders. cleanfid.fid.compute_kid takes no custom
    extractor, so this uses clean-fid's feature path and its kernel_distance; clean-fid
    draws subsets from numpy's global RNG, seeded here and restored afterwards."""
    from cleanfid import fid

    model = _model(feat_model, inception_weights, device)
    kw = dict(device=device, batch_size=batch_size, num_workers=num_workers,
              custom_fn_resize=custom_fn_resize)
    fa = cleanfid_folder_features(folder_a, model, **kw)
    fb = cleanfid_folder_features(folder_b, model, **kw)
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        return float(fid.kernel_distance(fa, fb, num_subsets=num_subsets, max_subset_size=max_subset_size))
    finally:
        np.random.set_state(state)
