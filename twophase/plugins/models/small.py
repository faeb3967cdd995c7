"""Small models for quick runs and tests: a multilayer perceptron and a small CNN.

Both keep PyTorch's default initialisation.
"""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """Flatten, `depth` hidden layers of `width` units with ReLU, then a linear layer.

    With `batchnorm` each hidden linear layer is followed by BatchNorm1d and has no
    bias, because the BatchNorm shift makes a bias redundant. Depth 0 is a linear model.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        width: int = 256,
        depth: int = 2,
        batchnorm: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        features = in_features
        for _ in range(depth):
            layers.append(nn.Linear(features, width, bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(nn.ReLU(inplace=True))
            features = width
        layers.append(nn.Linear(features, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class SmallCNN(nn.Module):
    """`depth` blocks of 3x3 convolution, optional BatchNorm and ReLU, then average pooling.

    Every block has `width` channels. The first block keeps the resolution and each later
    one halves it, so 8x8 digits end at 2x2 and 32x32 images at 8x8 with the default depth 3.
    Without BatchNorm the convolutions get a bias.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        width: int = 32,
        depth: int = 3,
        batchnorm: bool = True,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for index in range(depth):
            stride = 1 if index == 0 else 2
            layers.append(nn.Conv2d(channels, width, 3, stride=stride, padding=1, bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.ReLU(inplace=True))
            channels = width
        self.features = nn.Sequential(*layers)

        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.fc(torch.flatten(x, 1))
