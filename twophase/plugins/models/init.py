"""Weight initialisation shared by the built-in CIFAR networks."""

from __future__ import annotations

from torch import nn


def init_convolutions(model: nn.Module) -> None:
    """Draw every convolution's weights from Kaiming-normal (fan_out, ReLU gain).

    The scheme is He et al. 2015, "Delving Deep into Rectifiers". BatchNorm and linear
    layers keep PyTorch's defaults.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
