"""The evaluation classifier as a training Task, and its final weights on disk.

The published directory holds `evalnet.pt` (the state_dict) and `evalnet.json` (the EvalNet
constructor arguments), so `load_evalnet` rebuilds it with torch alone, without Ray.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from pipeline.arguments import ArgumentError
from pipeline.nets.evalnet import EvalNet
from pipeline.training.task import Task

WEIGHTS_FILE = "evalnet.pt"
CONFIG_FILE = "evalnet.json"


def num_stages(width: int, feature_dim: int) -> int:
    """How many stages give `feature_dim` features from a first stage of `width` channels:
    feature_dim = width * 2**(stages - 1), as each stage doubles the channels."""
    ratio, rest = divmod(feature_dim, width)
    if rest or ratio & (ratio - 1):
        raise ArgumentError("feature_dim", feature_dim,
                            f"must be `width` = {width} times a power of 2 (each stage doubles the channels)")
    return ratio.bit_length()


@dataclass(frozen=True)
class EvalnetArch:
    in_channels: int
    num_classes: int
    width: int
    blocks_per_stage: tuple[int, ...]

    @classmethod
    def from_config(cls, cfg, in_channels: int, num_classes: int) -> "EvalnetArch":
        """evalnet.{width, depth, feature_dim}: `depth` blocks in each of `num_stages` stages."""
        return cls(in_channels, num_classes, cfg.width, (cfg.depth,) * num_stages(cfg.width, cfg.feature_dim))

    def build(self) -> EvalNet:
        return EvalNet(self.in_channels, self.num_classes, self.width, self.blocks_per_stage)


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


def save_evalnet(directory, model: EvalNet, arch: EvalnetArch) -> None:
    """Write the weights and constructor arguments into a store Directory (see pipeline.store)."""
    import io

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    directory.write_bytes(WEIGHTS_FILE, buffer.getvalue())
    directory.write_json(CONFIG_FILE, asdict(arch))


def load_evalnet(location: str, device: str | torch.device = "cpu") -> EvalNet:
    """The trained EvalNet (in eval mode) from a train_evalnet output: a local path or URI."""
    import io

    from pipeline.store import Directory

    directory = Directory.at(location)
    raw = directory.read_json(CONFIG_FILE)
    arch = EvalnetArch(**{**raw, "blocks_per_stage": tuple(raw["blocks_per_stage"])})
    weights = torch.load(io.BytesIO(directory.read_bytes(WEIGHTS_FILE)), map_location=device, weights_only=True)
    model = arch.build()
    model.load_state_dict(weights)
    return model.to(device).eval()


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
