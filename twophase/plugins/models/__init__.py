"""Built-in models, registered through `register_models` like any third-party plugin.

The built-in builders check `request.width` and `request.options` before building, so
a typo in an option name fails with a UsageError instead of being ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from math import prod

from torch import nn

from twophase import hookimpl
from twophase.core.errors import UsageError
from twophase.core.specs import ModelRequest, ModelSpec
from twophase.plugins.models.cifar_resnet import CifarResNet
from twophase.plugins.models.external import (
    build_timm,
    build_torchvision,
    list_timm_models,
    list_torchvision_models,
)
from twophase.plugins.models.small import MLP, SmallCNN
from twophase.plugins.models.vgg import MIN_IMAGE_SIZE, CifarVGG

OptionValue = int | bool

# Options of each built-in model and their defaults. Each option takes the type of its default.
MLP_OPTIONS: dict[str, OptionValue] = {"depth": 2, "batchnorm": False}
CNN_OPTIONS: dict[str, OptionValue] = {"depth": 3, "batchnorm": True}

_TRUE_WORDS = ("true", "yes", "on", "1")
_FALSE_WORDS = ("false", "no", "off", "0")


def build_resnet20(request: ModelRequest) -> nn.Module:
    """Build the CIFAR ResNet-20, whose width is the first stage's channels (default 16)."""
    _read_options(request, {})
    return CifarResNet(
        num_classes=request.num_classes,
        in_channels=request.in_channels,
        width=_read_width(request, default=16),
    )


def build_vgg16(request: ModelRequest) -> nn.Module:
    """Build the CIFAR VGG-16, whose width is the first layer's channels (default 64)."""
    _read_options(request, {})
    width = _read_width(request, default=64)
    if min(request.image_size) < MIN_IMAGE_SIZE:
        height, image_width = request.image_size
        raise UsageError(
            f"model {request.name!r} needs images of at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} "
            f"for its five max-pools, got {height}x{image_width}; use resnet20 or cnn instead"
        )
    return CifarVGG(num_classes=request.num_classes, in_channels=request.in_channels, width=width)


def build_mlp(request: ModelRequest) -> nn.Module:
    """Build the MLP on flattened images, whose width is the units per hidden layer (default 256)."""
    options = _read_options(request, MLP_OPTIONS)
    depth = _at_least(request, "depth", int(options["depth"]), minimum=0)
    return MLP(
        in_features=request.in_channels * prod(request.image_size),
        num_classes=request.num_classes,
        width=_read_width(request, default=256),
        depth=depth,
        batchnorm=bool(options["batchnorm"]),
    )


def build_cnn(request: ModelRequest) -> nn.Module:
    """Build the small CNN, whose width is the channels of every block (default 32)."""
    options = _read_options(request, CNN_OPTIONS)
    depth = _at_least(request, "depth", int(options["depth"]), minimum=1)
    return SmallCNN(
        in_channels=request.in_channels,
        num_classes=request.num_classes,
        width=_read_width(request, default=32),
        depth=depth,
        batchnorm=bool(options["batchnorm"]),
    )


@hookimpl
def register_models() -> list[ModelSpec]:
    """Register the built-in models and the `timm` and `torchvision` namespaces."""
    return [
        ModelSpec("resnet20", build_resnet20, "CIFAR ResNet-20 with BatchNorm, 0.27M parameters"),
        ModelSpec("vgg16", build_vgg16, "CIFAR VGG-16 with BatchNorm, 14.7M parameters"),
        ModelSpec("mlp", build_mlp, "multilayer perceptron; options depth=2, batchnorm=false"),
        ModelSpec("cnn", build_cnn, "small CNN for digits and tests; options depth=3, batchnorm=true"),
        ModelSpec(
            "timm",
            build_timm,
            "any timm model as timm:<name>, randomly initialised",
            namespace=True,
            list_variants=list_timm_models,
        ),
        ModelSpec(
            "torchvision",
            build_torchvision,
            "any torchvision classification model as torchvision:<name>, randomly initialised",
            namespace=True,
            list_variants=list_torchvision_models,
        ),
    ]


def _read_width(request: ModelRequest, default: int) -> int:
    """Return the request's width, or `default` when it sets none."""
    if request.width is None:
        return default
    if isinstance(request.width, bool) or not isinstance(request.width, int) or request.width <= 0:
        raise UsageError(
            f"invalid width {request.width!r} for model {request.name!r}: it must be a positive "
            f"integer; the default is {default}"
        )
    return request.width


def _read_options(
    request: ModelRequest, defaults: Mapping[str, OptionValue]
) -> dict[str, OptionValue]:
    """Merge the request's options into `defaults`, rejecting unknown keys and wrong types."""
    unknown = sorted(set(request.options) - set(defaults))
    if unknown:
        known = ", ".join(f"{key} (default {value})" for key, value in defaults.items())
        raise UsageError(
            f"unknown option {', '.join(map(repr, unknown))} for model {request.name!r}; "
            f"known options: {known or 'none'}"
        )

    values = dict(defaults)
    for key, value in request.options.items():
        values[key] = _convert(request.name, key, value, type(defaults[key]))
    return values


def _convert(model: str, key: str, value: object, kind: type) -> OptionValue:
    """Convert an option value to `kind`, accepting the strings a command line passes."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE_WORDS + _FALSE_WORDS:
            return value.lower() in _TRUE_WORDS
        expected = "true or false"
    else:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        expected = "an integer"

    raise UsageError(f"invalid value {value!r} for option {key!r} of model {model!r}: expected {expected}")


def _at_least(request: ModelRequest, key: str, value: int, minimum: int) -> int:
    """Return `value` after checking that it is at least `minimum`."""
    if value < minimum:
        raise UsageError(
            f"invalid value {value} for option {key!r} of model {request.name!r}: "
            f"it must be at least {minimum}"
        )
    return value
