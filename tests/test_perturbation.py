"""Perturbations: requested norms in float64, realized norms and changed fractions."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from torch import nn

from twophase.core.errors import UsageError
from twophase.core.perturbation import PerturbationRequest, apply_perturbation, select_parameters
from twophase.core.state import TrainingState
from twophase.plugins import perturbations


def small_state(fill: float | None = None) -> TrainingState:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(50, 40), nn.BatchNorm1d(40), nn.Linear(40, 5))
    if fill is not None:
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.fill_(fill)
    return TrainingState.capture(7, model, torch.optim.SGD(model.parameters(), lr=0.1))


def draw(state: TrainingState, kind: str, eps: float, seed: int = 0) -> dict[str, torch.Tensor]:
    request = PerturbationRequest(kind=kind, eps=eps, parameters=state.parameters, seed=seed)
    delta = perturbations.perturb(state=state, spec=request, generator=torch.Generator().manual_seed(seed))
    assert delta is not None
    return delta


def norm(tensors: dict[str, torch.Tensor]) -> float:
    return math.sqrt(sum(float(t.double().square().sum()) for t in tensors.values()))


def test_gaussian_has_requested_norm() -> None:
    delta = draw(small_state(), "gaussian", 1e-7)
    assert all(t.dtype == torch.float64 for t in delta.values())
    assert norm(delta) == pytest.approx(1e-7, rel=1e-12)


def test_relative_scales_with_parameter_norm() -> None:
    state = small_state()
    delta = draw(state, "relative", 1e-3)
    assert norm(delta) == pytest.approx(1e-3 * float(state.parameter_vector().norm()), rel=1e-12)


def test_layerwise_scales_each_tensor() -> None:
    state = small_state()
    delta = draw(state, "layerwise", 1e-3)
    for name, change in delta.items():
        assert float(change.norm()) == pytest.approx(1e-3 * float(state.model[name].double().norm()), rel=1e-12), name


def test_coordinate_changes_one_entry() -> None:
    delta = draw(small_state(), "coordinate", 0.25)
    nonzero = torch.cat([t.reshape(-1) for t in delta.values()])
    assert int((nonzero != 0).sum()) == 1
    assert float(nonzero.abs().max()) == 0.25


def test_coordinate_on_channels_last_weights() -> None:
    model = nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    state = TrainingState.capture(0, model, torch.optim.SGD(model.parameters(), lr=0.1))
    delta = draw(state, "coordinate", 0.5)
    assert sum(int((t != 0).sum()) for t in delta.values()) == 1


def test_none_is_zero() -> None:
    assert norm(draw(small_state(), "none", 0.0)) == 0.0


def test_other_kind_left_to_other_plugins() -> None:
    state = small_state()
    request = PerturbationRequest(kind="mine", eps=1.0, parameters=state.parameters, seed=0)
    assert perturbations.perturb(state=state, spec=request, generator=torch.Generator()) is None


def test_same_seed_same_direction() -> None:
    state = small_state()
    a, b = draw(state, "gaussian", 1e-3, seed=5), draw(state, "gaussian", 1e-3, seed=5)
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_large_perturbation_is_realized() -> None:
    state = small_state()
    before = state.parameter_vector()
    record = apply_perturbation(state, draw(state, "gaussian", 1e-2), step=7)
    realized = float((state.parameter_vector() - before).norm())
    assert record.requested_norm == pytest.approx(1e-2, rel=1e-12)
    assert record.realized_norm == pytest.approx(realized, rel=1e-12)
    assert record.realized_norm == pytest.approx(1e-2, rel=1e-4)
    assert record.changed_fraction > 0.99


def test_rounding_swallows_small_perturbation(caplog: pytest.LogCaptureFixture) -> None:
    # Every weight is 1.0, whose float32 neighbours are 6e-8 below and 1.2e-7 above;
    # 1e-7 spread over 2,285 weights is about 2e-9 per weight, far below half of that.
    state = small_state(fill=1.0)
    before = state.parameter_vector()
    with caplog.at_level(logging.WARNING):
        record = apply_perturbation(state, draw(state, "gaussian", 1e-7), step=7)
    assert record.requested_norm == pytest.approx(1e-7, rel=1e-12)
    assert record.realized_norm == 0.0
    assert record.changed_fraction == 0.0
    assert torch.equal(state.parameter_vector(), before)
    assert "float32 rounding changed its norm" in caplog.text
    assert "t0 = 7" in caplog.text


def test_rounding_swallows_part(caplog: pytest.LogCaptureFixture) -> None:
    # 1e-7 on every weight survives only where the weight is small enough: float32
    # spacing is 0.0625 at 1e6 but 1.2e-10 at 0.001.
    state = small_state()
    with torch.no_grad():
        state.model["0.weight"].fill_(1e6)
        state.model["0.weight"][0, 0] = 0.001
    delta = {"0.weight": torch.full((40, 50), 1e-7, dtype=torch.float64)}
    with caplog.at_level(logging.WARNING):
        record = apply_perturbation(state, delta, step=3)
    assert record.changed_fraction == pytest.approx(1 / 2000)
    assert record.realized_norm == pytest.approx(1e-7, rel=1e-3)
    assert "t0 = 3" in caplog.text


def test_buffers_are_never_perturbed() -> None:
    state = small_state()
    running_mean = state.model["1.running_mean"].clone()
    apply_perturbation(state, draw(state, "gaussian", 1.0), step=0)
    assert torch.equal(state.model["1.running_mean"], running_mean)


def test_pattern_selects_parameters() -> None:
    state = small_state()
    assert select_parameters(state.parameters, "2.*") == ("2.weight", "2.bias")
    assert select_parameters(state.parameters, "*.bias,0.weight") == ("0.weight", "0.bias", "1.bias", "2.bias")


def test_pattern_without_match_rejected() -> None:
    with pytest.raises(UsageError, match="no parameter name matches"):
        select_parameters(small_state().parameters, "fc.*")
