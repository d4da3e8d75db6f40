"""The evaluation classifier as a training Task, and its accuracy on a shard split.

Its architecture and on-disk format (EvalnetArch, save_evalnet / load_evalnet) live in
pipeline.weights, which the metrics side reads without importing training.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline.arguments import ArgumentError
from pipeline.nets.evalnet import EvalNet
from pipeline.training.task import Task
from pipeline.weights import EvalnetArch

# Function-local imports: they bring in webdataset, which importing this module does not need.


def num_stages(width: int, feature_dim: int) -> int:
    """How many stages give `feature_dim` features from a first stage of `width` channels:
    feature_dim = width * 2**(stages - 1), as each stage doubles the channels."""
    ratio, rest = divmod(feature_dim, width)
    if rest or ratio & (ratio - 1):
        raise ArgumentError("feature_dim", feature_dim,
                            f"must be `width` = {width} times a power of 2 (each stage doubles the channels)")
    return ratio.bit_length()


def random_shift(images: torch.Tensor, generator: torch.Generator, pixels: int = 1) -> torch.Tensor:
    """Translate each image by up to `pixels` in x and y (edge-padded): cheap augmentation."""
    n, _, h, w = images.shape
    padded = F.pad(images, (pixels,) * 4, mode="replicate")
    offsets = torch.randint(0, 2 * pixels + 1, (n, 2), generator=generator).tolist()
    return torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets)])


@dataclass(frozen=True)
class EvalnetTask(Task):
    arch: EvalnetArch
    shift_pixels: int = 1

    def build_model(self) -> EvalNet:
        return self.arch.build()

    def loss(self, model, images, labels, generator):
        if self.shift_pixels:
            images = random_shift(images, generator, self.shift_pixels)
        _, logits = model(images)
        return F.cross_entropy(logits, labels)


@torch.no_grad()
def accuracy(model: EvalNet, data: str, split: str = "val", batch_size: int = 500) -> tuple[float, int]:
    """(top-1 accuracy, number of images) over one ordered pass of a shard split."""
    from pipeline.data.loader import StreamSpec, make_loader

    model.eval()
    correct = seen = 0
    for images, labels in make_loader(data, StreamSpec(split=split, batch_size=batch_size, infinite=False)):
        _, logits = model(images)
        correct += int((logits.argmax(dim=1) == labels).sum())
        seen += len(labels)
    return correct / max(seen, 1), seen
