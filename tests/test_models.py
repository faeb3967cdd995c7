"""Built-in models plugin: parameter counts, shapes, options and the timm and torchvision namespaces."""

from __future__ import annotations

from typing import Any

import pluggy
import pytest
import torch
from torch import nn

from twophase.core import hookspecs
from twophase.core.errors import UnknownNameError, UsageError
from twophase.core.specs import ModelRequest, ModelSpec
from twophase.plugins import models

BUILT_INS = ("resnet20", "vgg16", "mlp", "cnn")


def _specs() -> dict[str, ModelSpec]:
    return {spec.name: spec for spec in models.register_models()}


def _request(
    name: str,
    in_channels: int = 3,
    image_size: tuple[int, int] = (32, 32),
    width: int | None = None,
    **options: Any,
) -> ModelRequest:
    return ModelRequest(
        name=name,
        num_classes=10,
        in_channels=in_channels,
        image_size=image_size,
        width=width,
        options=options,
    )


def _build(name: str, **kwargs: Any) -> nn.Module:
    spec_name = name.partition(":")[0]
    return _specs()[spec_name].build(_request(name, **kwargs))


def _count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def _forward_backward(model: nn.Module, in_channels: int) -> tuple[torch.Tensor, nn.Module]:
    images = torch.randn(2, in_channels, 32, 32)
    logits = model(images)
    nn.functional.cross_entropy(logits, torch.tensor([0, 1])).backward()
    return logits, model


def test_resnet20_parameter_count() -> None:
    assert _count(_build("resnet20")) == 272_474


def test_resnet20_width_8_is_smaller() -> None:
    assert _count(_build("resnet20", width=8)) < 272_474


def test_resnet20_width_8_first_conv() -> None:
    model = _build("resnet20", width=8)
    first_conv = next(module for module in model.modules() if isinstance(module, nn.Conv2d))
    assert first_conv.out_channels == 8


def test_resnet20_convs_have_no_bias() -> None:
    convs = [module for module in _build("resnet20").modules() if isinstance(module, nn.Conv2d)]
    assert all(conv.bias is None for conv in convs)


def test_vgg16_parameter_count() -> None:
    assert abs(_count(_build("vgg16")) - 14.7e6) / 14.7e6 < 0.01


def test_vgg16_width_scales_channels() -> None:
    model = _build("vgg16", width=16)
    assert model.fc.in_features == 128


def test_vgg16_accepts_64_pixel_images() -> None:
    output = _build("vgg16", image_size=(64, 64))(torch.randn(2, 3, 64, 64))
    assert output.shape == (2, 10)


def test_vgg16_rejects_small_images() -> None:
    with pytest.raises(UsageError, match="8x8"):
        _build("vgg16", image_size=(8, 8))


@pytest.mark.parametrize("name", BUILT_INS)
def test_forward_shape_cifar(name: str) -> None:
    output = _build(name)(torch.randn(2, 3, 32, 32))
    assert output.shape == (2, 10)


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet20"])
def test_forward_shape_digits(name: str) -> None:
    output = _build(name, in_channels=1, image_size=(8, 8))(torch.randn(2, 1, 8, 8))
    assert output.shape == (2, 10)


def test_mlp_depth_option() -> None:
    model = _build("mlp", depth=3)
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    assert len(linears) == 4


def test_mlp_depth_0_is_linear() -> None:
    model = _build("mlp", in_channels=1, image_size=(8, 8), depth=0)
    assert _count(model) == 64 * 10 + 10


def test_mlp_batchnorm_option() -> None:
    model = _build("mlp", batchnorm=True)
    assert any(isinstance(module, nn.BatchNorm1d) for module in model.modules())


def test_mlp_has_no_batchnorm_by_default() -> None:
    model = _build("mlp")
    assert not any(isinstance(module, nn.BatchNorm1d) for module in model.modules())


def test_mlp_options_from_strings() -> None:
    model = _build("mlp", depth="1", batchnorm="true")
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    assert len(linears) == 2


def test_cnn_without_batchnorm() -> None:
    model = _build("cnn", batchnorm=False)
    assert not any(isinstance(module, nn.BatchNorm2d) for module in model.modules())


def test_cnn_without_batchnorm_has_conv_bias() -> None:
    model = _build("cnn", batchnorm=False)
    convs = [module for module in model.modules() if isinstance(module, nn.Conv2d)]
    assert all(conv.bias is not None for conv in convs)


@pytest.mark.parametrize("in_channels", [1, 3])
def test_timm_forward_backward(in_channels: int) -> None:
    model = _build("timm:test_resnet", in_channels=in_channels)
    logits, model = _forward_backward(model, in_channels)
    assert logits.shape == (2, 10)
    assert all(parameter.grad is not None for parameter in model.parameters())


@pytest.mark.parametrize("in_channels", [1, 3])
def test_torchvision_forward_backward(in_channels: int) -> None:
    model = _build("torchvision:resnet18", in_channels=in_channels)
    logits, model = _forward_backward(model, in_channels)
    assert logits.shape == (2, 10)
    assert all(parameter.grad is not None for parameter in model.parameters())


def test_torchvision_first_conv_adapted() -> None:
    model = _build("torchvision:resnet18", in_channels=1)
    assert model.conv1.in_channels == 1
    assert model.conv1.out_channels == 64
    assert model.conv1.stride == (2, 2)
    assert model.conv1.bias is None


def test_torchvision_passes_options() -> None:
    model = _build("torchvision:resnet18", zero_init_residual=True)
    assert torch.all(model.layer1[0].bn2.weight == 0)


def test_timm_unknown_variant_lists_matches() -> None:
    with pytest.raises(UnknownNameError, match="resnet18"):
        _build("timm:resnet1")


def test_torchvision_unknown_variant_lists_matches() -> None:
    with pytest.raises(UnknownNameError, match="resnet18"):
        _build("torchvision:resnt18")


def test_torchvision_rejects_segmentation_model() -> None:
    with pytest.raises(UnknownNameError, match="fcn_resnet50"):
        _build("torchvision:fcn_resnet50")


@pytest.mark.parametrize("name", ["timm:", "torchvision:"])
def test_namespace_without_variant(name: str) -> None:
    with pytest.raises(UsageError, match="names no"):
        _build(name)


@pytest.mark.parametrize("name", ["timm:test_resnet", "torchvision:resnet18"])
def test_external_rejects_width(name: str) -> None:
    with pytest.raises(UsageError, match="--model-option"):
        _build(name, width=8)


@pytest.mark.parametrize("name", ["timm:test_resnet", "torchvision:resnet18"])
def test_external_rejected_option_named(name: str) -> None:
    with pytest.raises(UsageError, match="'no_such_option'"):
        _build(name, no_such_option=1)


def test_timm_rejects_pretrained() -> None:
    with pytest.raises(UsageError, match="'pretrained'"):
        _build("timm:test_resnet", pretrained=True)


def test_torchvision_rejects_weights() -> None:
    with pytest.raises(UsageError, match="'weights'"):
        _build("torchvision:resnet18", weights="DEFAULT")


@pytest.mark.parametrize("name", BUILT_INS)
def test_unknown_option_named(name: str) -> None:
    with pytest.raises(UsageError, match="'dept'"):
        _build(name, dept=3)


def test_unknown_option_lists_known() -> None:
    with pytest.raises(UsageError, match="depth .default 2.*batchnorm"):
        _build("mlp", dept=3)


@pytest.mark.parametrize(("option", "value"), [("depth", "x"), ("depth", 2.5), ("batchnorm", "maybe")])
def test_option_wrong_type(option: str, value: object) -> None:
    with pytest.raises(UsageError, match=repr(value)):
        _build("mlp", **{option: value})


@pytest.mark.parametrize(("name", "depth"), [("mlp", -1), ("cnn", 0)])
def test_depth_too_small(name: str, depth: int) -> None:
    with pytest.raises(UsageError, match="at least"):
        _build(name, depth=depth)


@pytest.mark.parametrize("name", BUILT_INS)
@pytest.mark.parametrize("width", [0, -4])
def test_bad_width_named(name: str, width: int) -> None:
    with pytest.raises(UsageError, match=f"invalid width {width}"):
        _build(name, width=width)


@pytest.mark.parametrize("name", [*BUILT_INS, "timm:test_resnet", "torchvision:resnet18"])
def test_build_deterministic(name: str) -> None:
    torch.manual_seed(0)
    first = _build(name).state_dict()
    torch.manual_seed(0)
    second = _build(name).state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_register_models_every_name() -> None:
    assert set(_specs()) == {*BUILT_INS, "timm", "torchvision"}


def test_register_models_namespaces() -> None:
    namespaces = {spec.name for spec in models.register_models() if spec.namespace}
    assert namespaces == {"timm", "torchvision"}


@pytest.mark.parametrize(("name", "variant"), [("timm", "test_resnet"), ("torchvision", "resnet18")])
def test_list_variants_contains(name: str, variant: str) -> None:
    list_variants = _specs()[name].list_variants
    assert list_variants is not None
    assert variant in list_variants()


def test_register_models_as_plugin() -> None:
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    manager.register(models)
    names = {spec.name for specs in manager.hook.register_models() for spec in specs}
    assert names == {*BUILT_INS, "timm", "torchvision"}
