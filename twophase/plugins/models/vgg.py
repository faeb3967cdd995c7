"""CIFAR VGG-16 (configuration D of Simonyan and Zisserman 2015) with BatchNorm and one linear layer.

Unlike the ImageNet model it has no dropout and no 4096-unit classifier. The 512
features go straight to the linear layer, which gives 14,724,042 parameters for 10
classes and 3 input channels.
"""

from __future__ import annotations

import torch
from torch import nn

from twophase.plugins.models.init import init_convolutions

# Channels of each 3x3 convolution at width 64, where "M" marks a 2x2 max-pool.
VGG16_LAYERS: tuple[int | str, ...] = (
    64, 64, "M",
    128, 128, "M",
    256, 256, 256, "M",
    512, 512, 512, "M",
    512, 512, 512, "M",
)  # fmt: skip

# Five 2x2 max-pools halve each side five times, so each side needs 2**5 pixels or more.
MIN_IMAGE_SIZE = 32


class CifarVGG(nn.Module):
    """VGG-16 whose convolutions have `width / 64` times the channels of the original.

    Adaptive average pooling to 1x1 lets it take any input of at least 32x32. On 32x32
    input the feature map is already 1x1, so the pooling changes nothing.
    """

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for entry in VGG16_LAYERS:
            if entry == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            out_channels = max(1, round(int(entry) * width / 64))
            layers += [
                nn.Conv2d(channels, out_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            ]
            channels = out_channels
        self.features = nn.Sequential(*layers)

        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        init_convolutions(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.fc(torch.flatten(x, 1))
