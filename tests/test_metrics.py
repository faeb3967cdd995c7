"""Built-in metrics through the real measurement context: closed forms and hand cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from twophase.core.data import ImageData
from twophase.core.measure import MeasurementContext, MeasureSettings, StateEvaluator
from twophase.core.state import TrainingState
from twophase.plugins import metrics
from twophase.core.measure import cosine_dissimilarity
from twophase.plugins.metrics import barrier

ALL = tuple(spec.name for spec in metrics.METRICS)


class ProductModel(nn.Module):
    """Logits (p0 * p1, 0) for every input, so the loss along a line has a closed form."""

    def __init__(self) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.zeros(2))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        product = (self.p[0] * self.p[1]).expand(images.shape[0])
        return torch.stack([product, torch.zeros_like(product)], dim=1)


class PixelModel(nn.Module):
    """Logits W @ (pixel 0, pixel 1), so predictions follow from the images by hand."""

    def __init__(self, weights: list[list[float]]) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.tensor(weights))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.reshape(images.shape[0], -1)[:, :2] @ self.weights.T


def image_data(test_images: torch.Tensor, test_labels: torch.Tensor) -> ImageData:
    return ImageData(
        "hand", test_images, test_labels, test_images, test_labels, ("zero", "one"), (0.0,), (1.0 / 255,)
    )


def context_for(model: nn.Module, data: ImageData, alpha_points: int = 11, bn_batches: int = 0) -> MeasurementContext:
    settings = MeasureSettings(bn_batches=bn_batches, bn_batch_size=4, alpha_points=alpha_points)
    normalise = lambda images: images.float()  # noqa: E731 - the data are already in logit units
    evaluator = StateEvaluator(model, data, normalise, settings)
    return MeasurementContext(ALL, "chaos", evaluator, np.linspace(0.0, 1.0, alpha_points))


def state_of(model: nn.Module, name: str, step: int = 0) -> TrainingState:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return TrainingState.capture(step, model, optimizer, run=name)


def test_cosine_dissimilarity_is_stable() -> None:
    angle = 1e-9
    u = torch.tensor([1.0, 0.0], dtype=torch.float64)
    v = torch.tensor([math.cos(angle), math.sin(angle)], dtype=torch.float64)
    naive = 1.0 - float(u @ v / (u.norm() * v.norm()))
    assert naive == 0.0
    assert cosine_dissimilarity(u, v) == pytest.approx(2 * math.sin(angle / 2) ** 2, rel=1e-9)


def test_cosine_dissimilarity_ignores_scale() -> None:
    u = torch.randn(100, dtype=torch.float64)
    assert cosine_dissimilarity(u, 3.0 * u) == pytest.approx(0.0, abs=1e-30)


def test_barrier_subtracts_endpoint_mean() -> None:
    assert barrier(np.array([1.0, 4.0, 3.0])) == 2.0


def test_loss_barrier_matches_closed_form() -> None:
    images = torch.zeros(6, 1, 1, 1, dtype=torch.uint8)
    labels = torch.zeros(6, dtype=torch.int64)
    model = ProductModel()
    with torch.no_grad():
        model.p.copy_(torch.tensor([2.0, 2.0]))
    a = state_of(model, "a")
    with torch.no_grad():
        model.p.copy_(torch.tensor([-2.0, -2.0]))
    b = state_of(model, "b")

    context = context_for(ProductModel(), image_data(images, labels))
    values = metrics.measure(a=a, b=b, context=context)

    # Along the line both parameters equal 4 alpha - 2, so the class-0 logit is
    # (4 alpha - 2)^2 and the loss is log(1 + exp(-(4 alpha - 2)^2)).
    alphas = np.linspace(0.0, 1.0, 11)
    closed = np.log1p(np.exp(-((4 * alphas - 2) ** 2)))
    assert np.allclose(context.curves["loss_barrier"], closed, rtol=1e-6)
    assert values["loss_barrier"] == pytest.approx(math.log(2) - math.log1p(math.exp(-4)), rel=1e-6)


def test_curve_endpoints_are_endpoint_losses() -> None:
    images = torch.zeros(4, 1, 1, 1, dtype=torch.uint8)
    labels = torch.tensor([0, 1, 0, 1])
    model = ProductModel()
    with torch.no_grad():
        model.p.copy_(torch.tensor([1.5, 0.5]))
    a = state_of(model, "a")
    with torch.no_grad():
        model.p.copy_(torch.tensor([-1.0, 2.0]))
    b = state_of(model, "b")
    context = context_for(ProductModel(), image_data(images, labels))
    metrics.measure(a=a, b=b, context=context)
    curve = context.curves["loss_barrier"]
    assert curve[0] == context.test_outputs(b).loss
    assert curve[-1] == context.test_outputs(a).loss


def test_identical_batchnorm_states_have_zero_metrics() -> None:
    torch.manual_seed(0)
    images = torch.randint(0, 256, (32, 3, 6, 6), dtype=torch.uint8)
    labels = torch.randint(0, 2, (32,))
    data = ImageData("random", images, labels, images, labels, ("a", "b"), (0.5,) * 3, (0.25,) * 3)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 2))
    with torch.no_grad():
        model(torch.randn(8, 3, 6, 6))  # give the running statistics values of their own
    parent, twin = state_of(model, "parent", 5), state_of(model, "twin", 5)
    scratch = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 2))
    context = context_for(scratch, data, bn_batches=3)
    values = metrics.measure(a=parent, b=twin, context=context)
    assert values == {name: 0.0 for name in ALL}


def test_disagreement_hand_case() -> None:
    # Pixels (0, 1) of ten 1x1x2 images. Model a predicts the larger pixel and model b
    # the smaller, so they agree only on the three ties, where argmax picks index 0.
    pixels = [(1, 2), (2, 1), (3, 3), (0, 5), (5, 0), (4, 4), (7, 1), (1, 7), (9, 9), (2, 6)]
    images = torch.tensor(pixels, dtype=torch.uint8).reshape(10, 1, 1, 2)
    data = image_data(images, torch.zeros(10, dtype=torch.int64))
    a = state_of(PixelModel([[1.0, 0.0], [0.0, 1.0]]), "a")
    b = state_of(PixelModel([[0.0, 1.0], [1.0, 0.0]]), "b")
    context = context_for(PixelModel([[0.0, 0.0], [0.0, 0.0]]), data)
    context.requested = ("disagreement",)
    assert metrics.measure(a=a, b=b, context=context) == {"disagreement": 0.7}


def test_only_requested_metrics_returned() -> None:
    images = torch.zeros(4, 1, 1, 1, dtype=torch.uint8)
    context = context_for(ProductModel(), image_data(images, torch.zeros(4, dtype=torch.int64)))
    context.requested = ("param_distance", "someone_elses_metric")
    model = ProductModel()
    values = metrics.measure(a=state_of(model, "a"), b=state_of(model, "b"), context=context)
    assert values == {"param_distance": 0.0}


def test_summaries_computed_once_per_state() -> None:
    images = torch.zeros(4, 1, 1, 1, dtype=torch.uint8)
    context = context_for(ProductModel(), image_data(images, torch.zeros(4, dtype=torch.int64)))
    parent = state_of(ProductModel(), "parent")
    for index in range(3):
        context.begin_pair()
        metrics.measure(a=parent, b=state_of(ProductModel(), f"twin-{index}"), context=context)
    assert context.computations["test_outputs"] == 4
    assert context.computations["parameter_vector"] == 4
