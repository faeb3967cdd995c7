"""Models from timm and torchvision, built with random initial weights so that nothing is downloaded.

timm and torchvision are imported on first use, because importing them takes seconds
that commands which build no external model should not pay.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from twophase.core.errors import UsageError, unknown_name
from twophase.core.specs import ModelRequest

logger = logging.getLogger(__name__)

# Options that the builders set themselves. Passing them could load pretrained weights
# or break the match with the data set's classes and channels.
TIMM_RESERVED_OPTIONS = ("pretrained", "num_classes", "in_chans")
TORCHVISION_RESERVED_OPTIONS = ("weights", "weights_backbone", "num_classes")


def list_timm_models() -> list[str]:
    """Return the architecture names that `timm.create_model` accepts, without tags."""
    import timm

    return list(timm.list_models())


def list_torchvision_models() -> list[str]:
    """Return the names of torchvision's classification models.

    Detection and segmentation models are left out because they are not image classifiers
    and their constructors download backbone weights by default (`weights_backbone` in
    torchvision 0.29).
    """
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models))


def build_timm(request: ModelRequest) -> nn.Module:
    """Build `timm:<variant>` with random weights for the data set's classes and channels."""
    import timm

    variant = _check_request(request, "timm", TIMM_RESERVED_OPTIONS)
    if not timm.is_model(variant):
        raise unknown_name("timm model", variant, list_timm_models(), listing="timm.list_models() lists them")

    def create() -> nn.Module:
        return timm.create_model(
            variant,
            pretrained=False,
            num_classes=request.num_classes,
            in_chans=request.in_channels,
            **request.options,
        )

    return _call_with_options(request, create)


def build_torchvision(request: ModelRequest) -> nn.Module:
    """Build `torchvision:<variant>` with random weights, adapting the first convolution to the channels."""
    import torchvision

    variant = _check_request(request, "torchvision", TORCHVISION_RESERVED_OPTIONS)
    known = list_torchvision_models()
    if variant not in known:
        raise unknown_name("torchvision classification model", variant, known, listing="torchvision.models.list_models(module=torchvision.models) lists them")

    def create() -> nn.Module:
        return torchvision.models.get_model(
            variant, weights=None, num_classes=request.num_classes, **request.options
        )

    model = _call_with_options(request, create)
    if request.in_channels != 3:
        # torchvision's constructors take no input-channel argument and assume RGB.
        _replace_first_conv(model, request.in_channels, request.name)
    return model


def _check_request(request: ModelRequest, library: str, reserved: tuple[str, ...]) -> str:
    """Return the variant after rejecting a missing variant, a width and reserved options."""
    variant = request.variant
    if not variant:
        raise UsageError(
            f"model {request.name!r} names no {library} model; write it as {library}:<name>, "
            f"for example {library}:resnet18"
        )

    if request.width is not None:
        raise UsageError(
            f"model {request.name!r} does not take a width: width applies to built-in models "
            f"only; set the {library} model's own size argument with --model-option instead"
        )

    clashes = sorted(set(request.options) & set(reserved))
    if clashes:
        raise UsageError(
            f"model option {clashes[0]!r} cannot be set for {request.name!r}: twophase sets "
            f"{', '.join(reserved)} itself and never loads pretrained weights; remove the option"
        )
    return variant


def _call_with_options(request: ModelRequest, create: Callable[[], nn.Module]) -> nn.Module:
    """Call `create`, turning a TypeError or ValueError caused by the request's options into a UsageError."""
    if not request.options:
        return create()

    try:
        return create()
    except (TypeError, ValueError) as error:
        rejected = _rejected_option(str(error), request.options)
        raise UsageError(
            f"model {request.name!r} rejected option {rejected} ({error}); check the option's "
            f"name and type against the model's constructor"
        ) from error


def _rejected_option(message: str, options: Mapping[str, Any]) -> str:
    """Name the option that a TypeError message points to, or else every option passed."""
    match = re.search(r"keyword argument '(\w+)'", message)
    if match and match.group(1) in options:
        return repr(match.group(1))
    return ", ".join(f"{key}={value!r}" for key, value in options.items())


def _replace_first_conv(model: nn.Module, in_channels: int, model_name: str) -> None:
    """Swap the first Conv2d, in registration order, for one that reads `in_channels` channels."""
    first = next(
        ((name, module) for name, module in model.named_modules() if isinstance(module, nn.Conv2d)),
        None,
    )
    if first is None:
        raise UsageError(
            f"model {model_name!r} has no Conv2d to adapt to {in_channels} input channels; "
            f"use a data set with 3 channels or another model"
        )
    path, conv = first

    # NOTE: the new layer gets PyTorch's default Conv2d initialisation, not the scheme
    # that the torchvision model applied to the layer it replaces.
    replacement = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    parent_path, _, attribute = path.rpartition(".")
    setattr(model.get_submodule(parent_path), attribute, replacement)
    logger.info("%s: convolution %s now takes %d input channels", model_name, path, in_channels)
