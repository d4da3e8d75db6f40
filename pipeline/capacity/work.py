"""What a config implies: its networks' FLOPs per image, and the parts of a stage's work.

Torch is imported inside the functions: a plan that counts nothing stays cheap.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Optional, Sequence

TRAIN, SAMPLE, FEATURES = "train", "sample", "features"  # kinds of work, each with its own throughput
BACKWARD_FACTOR = 3  # a training step's forward + backward, in forwards
UNKNOWN_CLASSES = 1000  # a source not listed yet; the class count only sizes an embedding and a last layer
T_PROBE = 500  # the timestep of the counted forward (the FLOPs do not depend on it)


@dataclass(frozen=True)
class Net:
    name: str
    gflops: float      # per image: one forward (for a gradient: its forward and backward)
    parameters: int


class Networks:
    """The config's networks, each built and counted on first use (a plan that extracts no
    Inception features never builds Inception)."""

    ORDER = ("unet", "guide", "classifier", "classifier gradient", "evalnet", "inception")

    def __init__(self, cfg):
        from pipeline.data.sources.listing import expected_size

        self.cfg = cfg
        self.dataset = expected_size(cfg.data)  # None: imagefolder / parquet, known once listed
        self.num_classes = self.dataset.classes if self.dataset else UNKNOWN_CLASSES
        self._counted: dict[str, Net] = {}

    @property
    def counted(self) -> list[Net]:
        return sorted(self._counted.values(), key=lambda n: self.ORDER.index(n.name))

    def _count(self, name: str, net, inputs: Callable[[], tuple], gradient: bool = False) -> Net:
        import torch

        from pipeline.nets.flops import forward_gflops_per_image, input_gradient_gflops_per_image

        with torch.device("meta"):
            args = inputs()
        gflops = input_gradient_gflops_per_image(net, *args) if gradient else forward_gflops_per_image(net, *args)
        self._counted[name] = Net(name, gflops, sum(p.numel() for p in net.parameters()))
        return self._counted[name]

    def _noisy_input(self) -> tuple:
        import torch

        size = self.cfg.data.resolution
        return torch.zeros(1, 3, size, size), torch.full((1,), T_PROBE)

    def _unet(self, name: str, base_channels: Optional[int] = None) -> Net:
        import torch

        from pipeline.nets.flops import on_meta
        from pipeline.nets.unet import UNet
        from pipeline.training.networks import unet_kwargs

        kwargs = unet_kwargs(self.cfg.model, self.cfg.data.resolution, self.num_classes, base_channels)
        return self._count(name, on_meta(lambda: UNet(**kwargs)),
                           lambda: (*self._noisy_input(), torch.zeros(1, dtype=torch.long)))

    @cached_property
    def unet(self) -> Net:
        return self._unet("unet")

    @cached_property
    def guide(self) -> Net:
        """Autoguidance's guide: the UNet at train.guide.base_channels, or (kind early) the UNet itself."""
        guide = self.cfg.train.guide
        return self._unet("guide", guide.base_channels) if guide.kind == "smaller" else self.unet

    @cached_property
    def _classifier_module(self):
        from pipeline.nets.classifier import NoisyClassifier
        from pipeline.nets.flops import on_meta
        from pipeline.training.networks import classifier_kwargs

        kwargs = classifier_kwargs(self.cfg.classifier, self.cfg.data.resolution, self.num_classes)
        return on_meta(lambda: NoisyClassifier(**kwargs))

    @cached_property
    def classifier(self) -> Net:
        return self._count("classifier", self._classifier_module, self._noisy_input)

    @cached_property
    def classifier_gradient(self) -> Net:
        return self._count("classifier gradient", self._classifier_module, self._noisy_input, gradient=True)

    @cached_property
    def evalnet(self) -> Net:
        import torch

        from pipeline.nets.flops import on_meta
        from pipeline.training.networks import evalnet_arch

        arch = evalnet_arch(self.cfg.evalnet, in_channels=3, num_classes=self.num_classes)
        size = self.cfg.data.resolution
        return self._count("evalnet", on_meta(arch.build), lambda: (torch.zeros(1, 3, size, size),))

    @cached_property
    def inception(self) -> Net:
        import torch
        from torchvision.models import inception_v3  # a dependency of clean-fid

        from pipeline.nets.flops import on_meta

        net = on_meta(lambda: inception_v3(weights=None, aux_logits=False, init_weights=False))
        return self._count("inception", net, lambda: (torch.zeros(1, 3, 299, 299),))

    def extractor(self, name: str) -> Net:
        """An `eval.extractors` entry: inception | evalnet."""
        return getattr(self, name)


@dataclass(frozen=True)
class Part:
    """A piece of a stage's work, as the plan prints it."""

    what: str                      # the formula
    images: Optional[int]          # trained on, generated or featurised; None: unknown before listing
    passes: Optional[int]          # network passes (a training image: one forward + backward)
    flops: Optional[float]         # None: not costed
    kind: str = SAMPLE             # which throughput applies
    precision: str = "fp32"
    pieces: Optional[int] = None   # independent pieces (configurations): bounds units that run one per piece


@dataclass(frozen=True)
class Work:
    parts: tuple[Part, ...] = ()
    note: str = ""


def training(name: str, net: Net, section, kimg: Optional[float] = None) -> Part:
    """The training run a `train` / `classifier` / `evalnet` section asks for (or `kimg` of it)."""
    images = round((section.kimg if kimg is None else kimg) * 1000)
    return Part(f"{name}: {images / section.batch_size:,.0f} steps x batch {section.batch_size} x {BACKWARD_FACTOR} "
                f"x {net.gflops:.4g} GFLOPs", images, images, BACKWARD_FACTOR * images * net.gflops * 1e9,
                TRAIN, section.precision)


def passes_per_image(config, nets: Networks, num_train_timesteps: int) -> list[tuple[Net, int]]:
    """(network, passes per image) of a pipeline.generation.SamplerConfig: the main network at
    every step, the guiding pass at every guided step; they add up to nfe_per_image."""
    from pipeline.diffusion.guidance import CLASSIFIER, GUIDE
    from pipeline.generation.sampler_config import guided_steps

    passes = [(nets.unet, config.steps)]
    guided = guided_steps(config, num_train_timesteps)
    if guided:
        needs = config.kind.needs
        passes.append((nets.guide if GUIDE in needs else nets.classifier_gradient if CLASSIFIER in needs
                       else nets.unet, guided))
    return passes


def sampling(what: str, configs: Sequence, images_each: int, nets: Networks, num_train_timesteps: int) -> Part:
    """`images_each` images of every configuration (SamplerConfigs of one precision)."""
    per_config = [passes_per_image(c, nets, num_train_timesteps) for c in configs]
    passes = sum(images_each * count for one in per_config for _, count in one)
    flops = sum(images_each * count * net.gflops * 1e9 for one in per_config for net, count in one)
    if len(configs) == 1:
        (main, steps), *guiding = per_config[0]
        terms = [f"{steps} steps x {main.name} {main.gflops:.4g}"]
        terms += [f"{count} guided x {net.name} {net.gflops:.4g}" for net, count in guiding]
        what = f"{what}: {images_each:,} images x ({' + '.join(terms)} GFLOPs)"
    else:
        what = (f"{what}: {len(configs)} configurations x {images_each:,} images x "
                f"{passes / images_each / len(configs):.4g} network passes on average")
    return Part(what, images_each * len(configs), passes, flops, SAMPLE, configs[0].precision, len(configs))


def features(what: str, images: Optional[int], nets: Networks, extractors: Sequence[str],
             pieces: Optional[int] = None) -> Part:
    """`images` through every extractor (float32)."""
    used = [nets.extractor(name) for name in extractors]
    terms = " + ".join(f"{net.name} {net.gflops:.4g}" for net in used)
    if images is None:
        return Part(f"{what}: every one listed x ({terms} GFLOPs)", None, None, None, pieces=pieces)
    return Part(f"{what}: {images:,} images x ({terms} GFLOPs)", images, images * len(used),
                images * sum(net.gflops for net in used) * 1e9, FEATURES, "fp32", pieces)
