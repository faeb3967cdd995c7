"""Step values and step grids."""

from __future__ import annotations

import pytest

from twophase.core.errors import GridError
from twophase.core.steps import Step, StepGrid


def resolve(text: str, steps_per_epoch: int = 100, total: int = 2000) -> tuple[int, ...]:
    return StepGrid.parse(text).resolve(steps_per_epoch, total)


def test_step_parses_iterations() -> None:
    assert Step.parse("300").resolve(390) == 300


def test_step_parses_epochs() -> None:
    assert Step.parse("5ep").resolve(390) == 1950


def test_step_parses_fractional_epochs() -> None:
    assert Step.parse("0.5ep").resolve(390) == 195


def test_step_end_needs_total() -> None:
    with pytest.raises(GridError, match="length of training"):
        Step.parse("end").resolve(390)


@pytest.mark.parametrize("text", ["-3", "3x", "ep", "5 epochs", "1e3", ""])
def test_step_rejects_malformed(text: str) -> None:
    with pytest.raises(GridError, match="invalid step"):
        Step.parse(text)


def test_grid_list() -> None:
    assert resolve("0,100,2000") == (0, 100, 2000)


def test_grid_linear() -> None:
    assert resolve("lin:0:2000:11") == tuple(range(0, 2001, 200))


def test_grid_log() -> None:
    steps = resolve("log:10:2000:8")
    assert steps[0] == 10
    assert steps[-1] == 2000
    assert len(steps) == 8
    assert list(steps) == sorted(set(steps))


def test_grid_log_drops_rounded_duplicates() -> None:
    assert resolve("log:1:10:20") == tuple(range(1, 11))


def test_grid_log_from_zero() -> None:
    assert resolve("log:0:1000:4") == (0, 1, 32, 1000)
    assert resolve("log:0:1000:2") == (0, 1000)


def test_grid_epochs() -> None:
    assert resolve("5ep,10ep") == (500, 1000)


def test_grid_end_and_every() -> None:
    assert resolve("every:500") == (0, 500, 1000, 1500, 2000)
    assert resolve("lin:0:end:3") == (0, 1000, 2000)


def test_grid_combines_items() -> None:
    assert resolve("0,log:10:1000:3,2000") == (0, 10, 100, 1000, 2000)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("0,,100", "empty item"),
        ("lin:0:100", "expected lin:START:STOP:N"),
        ("lin:0:100:1", "N must be an integer of at least 2"),
        ("lin:0:100:x", "N must be an integer"),
        ("lin:100:0:5", "STOP must exceed START"),
        ("geo:1:100:5", "unknown range 'geo'"),
        ("every:0", "at least 1"),
        ("every:10:20", "expected every:K"),
        ("0,abc", "invalid step 'abc'"),
    ],
)
def test_grid_rejects_malformed(text: str, message: str) -> None:
    with pytest.raises(GridError, match=message):
        resolve(text)


def test_grid_rejects_decreasing() -> None:
    with pytest.raises(GridError, match="not increasing, step 50 follows step 100"):
        resolve("100,50")


def test_grid_rejects_past_end() -> None:
    with pytest.raises(GridError, match="step 2500 lies past the end of training at step 2000"):
        resolve("0,2500")


def test_grid_rejects_epochs_past_end() -> None:
    with pytest.raises(GridError, match="past the end"):
        resolve("lin:0:30ep:4")


def test_grid_error_names_bad_part() -> None:
    with pytest.raises(GridError, match=r"'log:10:2000:1'"):
        resolve("0,log:10:2000:1")
