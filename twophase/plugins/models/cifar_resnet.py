"""CIFAR ResNet from "Deep Residual Learning for Image Recognition" (He et al. 2016, arXiv:1512.03385).

The network has 6n+2 layers, and n=3 gives ResNet-20. Where a block changes the shape,
its shortcut is a 1x1 convolution with BatchNorm (the paper's option B), and elsewhere
it is the identity. The paper's CIFAR models pad the identity with zeros instead
(option A), so this model has 2,752 more parameters: 272,474 with width 16, 10 classes
and 3 input channels.
"""

from __future__ import annotations

import torch
from torch import nn

from twophase.plugins.models.init import init_convolutions


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm, added to a shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stem, then three stages of `blocks_per_stage` blocks with width, 2*width, 4*width channels.

    Global average pooling before the linear layer lets it take any input size. On 8x8
    images the last stage's feature maps are 2x2.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        width: int = 16,
        blocks_per_stage: int = 3,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )

        blocks: list[nn.Module] = []
        channels = width
        for stage in range(3):
            stage_channels = width * 2**stage
            for index in range(blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(channels, stage_channels, stride))
                channels = stage_channels
        self.blocks = nn.Sequential(*blocks)

        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        init_convolutions(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))
