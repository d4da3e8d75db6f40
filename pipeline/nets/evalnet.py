"""A small clean classifier used as an offline feature space for metrics (e.g. ``fd_evalnet``).

Deliberately a different architecture from the noisy classifier: a plain (post-activation)
ResNet (He et al., 2016) with BatchNorm, no timestep input, global average pooling. Its penultimate
features (the pooled vector) are what metrics compare.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return F.relu(h + self.shortcut(x))


class EvalNet(nn.Module):
    """``forward(x) -> (features [B, feature_dim], logits [B, num_classes])`` for images in [-1, 1].

    in_channels: image channels; num_classes: label count; width: channels of the first stage;
    blocks_per_stage: BasicBlocks per stage, each stage after the first halves the resolution
    and doubles the width. feature_dim = width * 2 ** (len(blocks_per_stage) - 1).
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 32,
                 blocks_per_stage: Sequence[int] = (2, 2, 2)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        layers, channels = [], width
        for stage, blocks in enumerate(blocks_per_stage):
            out_channels = width * 2 ** stage
            for block in range(blocks):
                layers.append(BasicBlock(channels, out_channels, stride=2 if stage > 0 and block == 0 else 1))
                channels = out_channels
        self.stages = nn.Sequential(*layers)
        self.feature_dim = channels
        self.fc = nn.Linear(channels, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor):
        features = self.features(x)
        return features, self.fc(features)
