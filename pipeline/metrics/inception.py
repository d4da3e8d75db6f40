"""clean-fid's Inception network (FID / KID / IS proper), built from clean-fid's own code.

clean-fid (Parmar et al. 2022) computes FID in mode "clean" with the TorchScript port of
the TF Inception-v3 ("inception-2015-12-05.pt", 2048-d pool features), applied to images
resized to 299 x 299 by PIL bicubic on float values. `cleanfid.features.
build_feature_extractor("clean")` loads that file from /tmp (./ on Windows) and downloads
it when absent. Here the same network class (cleanfid.inception_torchscript.InceptionV3W,
resize_inside=False, i.e. what mode "clean" builds) is loaded from a configured path or
from clean-fid's own location -- but never downloaded: the file is checked first, and
InceptionWeightsMissing says how to provide it.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from .extractors import CleanResizeExtractor

# Function-local imports: they bring in clean-fid, which importing this module does not need.

__all__ = ["INCEPTION_FILENAME", "INCEPTION_URL", "InceptionWeightsMissing",
           "cleanfid_default_weights_dir", "resolve_inception_weights", "load_cleanfid_inception",
           "InceptionNetwork", "inception_extractor"]

INCEPTION_FILENAME = "inception-2015-12-05.pt"
INCEPTION_URL = ("https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/"
                 + INCEPTION_FILENAME)
CONFIG_KEY = "eval.inception_weights"


class InceptionWeightsMissing(FileNotFoundError):
    """clean-fid's Inception weights are not on this machine (and are not downloaded)."""


def cleanfid_default_weights_dir() -> Path:
    """Where cleanfid.features.feature_extractor looks for (and downloads) the weights."""
    return Path("./" if platform.system() == "Windows" else "/tmp")


def _missing_message(looked_at: list[Path]) -> str:
    where = ", ".join(str(p) for p in looked_at)
    return (
        f"clean-fid's Inception weights ({INCEPTION_FILENAME}) were not found (looked at: {where}). "
        f"FID/KID/IS with clean-fid's Inception need this file and it is not downloaded here. "
        f"Provide it by either: (1) setting the config key {CONFIG_KEY} to the path of "
        f"{INCEPTION_FILENAME} (or to the directory that holds it), e.g. "
        f"`--set {CONFIG_KEY}=/data/weights/{INCEPTION_FILENAME}`; or (2) copying it to "
        f"clean-fid's own location, {cleanfid_default_weights_dir() / INCEPTION_FILENAME}. "
        f"The file is clean-fid's download from {INCEPTION_URL} "
        f"(fetch it on a machine with internet access)."
    )


def resolve_inception_weights(weights: str | os.PathLike | None = None) -> Path:
    """The weights file to load: `weights` (a file, or a directory holding
    inception-2015-12-05.pt), else clean-fid's default location. Raises
    InceptionWeightsMissing when it does not exist."""
    if weights is None:
        candidate = cleanfid_default_weights_dir() / INCEPTION_FILENAME
    else:
        p = Path(weights).expanduser()
        candidate = p / INCEPTION_FILENAME if p.is_dir() else p
    if not candidate.is_file():
        raise InceptionWeightsMissing(_missing_message([candidate]))
    if candidate.name != INCEPTION_FILENAME:
        raise InceptionWeightsMissing(
            f"{candidate}: clean-fid loads its Inception from a file named {INCEPTION_FILENAME}; "
            f"rename it (or point {CONFIG_KEY} at the directory holding {INCEPTION_FILENAME}).")
    return candidate


def load_cleanfid_inception(weights: str | os.PathLike | None = None,
                            device: str | torch.device = "cpu") -> torch.nn.Module:
    """clean-fid's InceptionV3W for mode "clean" (features of float [0, 255] 299x299 NCHW
    images), loaded from `weights` or clean-fid's location, never downloading."""
    path = resolve_inception_weights(weights)  # raises before clean-fid could download
    from cleanfid.inception_torchscript import InceptionV3W

    model = InceptionV3W(str(path.parent), download=False, resize_inside=False)
    return model.to(device).eval()


class InceptionNetwork(torch.nn.Module):
    """clean-fid's Inception returning (2048-d pool features, 1008-way logits).

    Features are clean-fid's own forward. The logits are the TorchScript model's final
    linear layer (`base.output`) applied to those features *without its bias*, as the
    original TF Inception Score does (StyleGAN2-ADA's IS passes no_output_bias=True to the
    same file for this reason). None when the file has no `output` layer.
    """

    def __init__(self, cleanfid_model: torch.nn.Module):
        super().__init__()
        self.model = cleanfid_model
        self._output = getattr(getattr(cleanfid_model, "base", None), "output", None)

    def forward(self, x: torch.Tensor):
        feats = self.model(x)
        logits = None
        if self._output is not None:
            logits = torch.nn.functional.linear(feats, self._output.weight)
        return feats, logits


def inception_extractor(weights: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                        batch_size: int = 64) -> CleanResizeExtractor:
    """FID-protocol extractor: clean resize to 299 + clean-fid's Inception ("inception")."""
    net = InceptionNetwork(load_cleanfid_inception(weights, device))
    return CleanResizeExtractor(net, name="inception", feature_dim=2048, size=299,
                                batch_size=batch_size, device=device, predicts_labels=False)
