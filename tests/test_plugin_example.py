"""The example plugin package in examples/plugin-example, installed as a user would."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from typer.testing import CliRunner

from tests.test_metrics import ProductModel, context_for, image_data, state_of
from twophase.cli.app import app
from twophase.core.perturbation import PerturbationRequest
from twophase.core.state import TrainingState

try:
    VERSION = importlib.metadata.version("twophase-example")
except importlib.metadata.PackageNotFoundError:
    pytest.skip(
        "the example plugin is not installed; run pip install -e examples/plugin-example, as the README's test command does",
        allow_module_level=True,
    )

from twophase_example import plugin  # noqa: E402 - importable only once installed

CHAOS_ARGS = [
    "chaos", "--model", "mlp", "--width", "16", "--dataset", "synthetic",
    "--data-option", "train_size=64", "--data-option", "test_size=32", "--data-option", "image_size=8",
    "--steps", "12", "--batch-size", "16", "--milestones", "none",
    "--t0", "0,4", "--t1", "4,12", "--alpha-points", "3", "--no-progress",
    "--perturbation", "rademacher", "--metrics", "param_cosine,symmetric_kl",
]


def test_plugins_command_lists_example() -> None:
    result = CliRunner().invoke(app, ["plugins"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "example" in result.output
    assert f"twophase-example {VERSION}" in result.output
    assert "rademacher" in result.output
    assert "symmetric_kl" in result.output


def test_chaos_with_plugin_metric_and_perturbation(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, [*CHAOS_ARGS, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    with xr.open_zarr(tmp_path / "results.zarr") as store:
        kl = store["values"].sel(metric="symmetric_kl")
        assert np.isfinite(kl.sel(t1=12).values).all()
        assert (kl.sel(t1=12).values > 0).all()
        assert str(store.metric_long_name.sel(metric="symmetric_kl").values) == plugin.SYMMETRIC_KL.long_name
        assert str(store.metric_units.sel(metric="symmetric_kl").values) == "nats"
        assert store.control.sel(metric="symmetric_kl", t1=12).item() == 0.0
        assert np.allclose(store.requested_norm.values, 1e-7, rtol=1e-12)
        assert store.attrs["perturbation"] == "rademacher"


def test_show_lists_plugin_metric(tmp_path: Path) -> None:
    assert CliRunner().invoke(app, [*CHAOS_ARGS, "--out", str(tmp_path)]).exit_code == 0
    result = CliRunner().invoke(app, ["show", str(tmp_path)], terminal_width=120)
    assert result.exit_code == 0, result.output
    assert "symmetric_kl (nats)" in result.output


def test_blocked_example_is_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWOPHASE_BLOCK_PLUGINS", "example")
    result = CliRunner().invoke(app, [*CHAOS_ARGS, "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown metric 'symmetric_kl'" in result.stderr


def test_rademacher_has_requested_norm() -> None:
    model = torch.nn.Linear(10, 3)
    state = TrainingState.capture(0, model, torch.optim.SGD(model.parameters(), lr=0.1))
    spec = PerturbationRequest(kind="rademacher", eps=1e-3, parameters=state.parameters, seed=0)
    delta = plugin.perturb(state=state, spec=spec, generator=torch.Generator().manual_seed(0))
    flat = torch.cat([t.reshape(-1) for t in delta.values()])
    assert float(flat.norm()) == pytest.approx(1e-3, rel=1e-12)
    assert torch.allclose(flat.abs(), torch.full_like(flat, 1e-3 / flat.numel() ** 0.5))


def test_symmetric_kl_computed_once_per_state() -> None:
    images = torch.zeros(4, 1, 1, 1, dtype=torch.uint8)
    context = context_for(ProductModel(), image_data(images, torch.zeros(4, dtype=torch.int64)))
    context.requested = ("symmetric_kl",)
    parent = state_of(ProductModel(), "parent")
    for index in range(3):
        twin_model = ProductModel()
        with torch.no_grad():
            twin_model.p.fill_(0.5 * (index + 1))
        values = plugin.measure(a=parent, b=state_of(twin_model, f"twin-{index}"), context=context)
        assert values["symmetric_kl"] > 0
    assert context.computations["log_softmax"] == 4
