"""The cone experiment end to end, its views, and its errors."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from typer.testing import CliRunner

from tests.conftest import small_cone_config, small_config
from twophase.cli.app import app
from twophase.core.cone import run_cone
from twophase.core.cone.views import (
    angles_degrees,
    classical_mds,
    cone_half_angles,
    kernel_transition,
    kernel_transition_step,
    offset_distances,
)
from twophase.core.errors import UsageError
from twophase.core.measure import cosine_dissimilarity
from twophase.core.plugins import Hooks, create_hooks
from twophase.core.training import train

STEPS = [0, 2, 4, 6, 8, 10, 12]  # the checkpoints 0, 4, 8 and 12 with the offsets t + 2


@pytest.fixture(scope="module")
def cone_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cone")
    result = run_cone(small_cone_config(), out, hooks=create_hooks())
    assert result.kernels_computed == len(STEPS)
    return out


@pytest.fixture(scope="module")
def cone_store(cone_folder: Path) -> xr.Dataset:
    return xr.open_zarr(cone_folder / "results.zarr").load()


def test_checkpoints_include_offsets(cone_store: xr.Dataset) -> None:
    assert list(cone_store.t0.values) == STEPS
    assert list(cone_store.t1.values) == STEPS


def test_distance_is_symmetric_with_zero_diagonal(cone_store: xr.Dataset) -> None:
    for metric in ("kernel_distance", "param_cosine"):
        matrix = cone_store["values"].sel(metric=metric).values
        assert np.array_equal(matrix, matrix.T), metric
        assert (np.diag(matrix) == 0.0).all(), metric
        assert (matrix[~np.eye(len(STEPS), dtype=bool)] > 0).all(), metric


def test_kernel_distance_ignores_scale() -> None:
    kernel = torch.randn(6, 6, dtype=torch.float64)
    kernel = kernel @ kernel.T
    other = kernel + 0.01 * torch.eye(6, dtype=torch.float64)
    assert cosine_dissimilarity(kernel, 7.5 * kernel) == pytest.approx(0.0, abs=1e-15)
    assert cosine_dissimilarity(3.0 * kernel, other) == pytest.approx(cosine_dissimilarity(kernel, other), rel=1e-12)


def test_store_views(cone_store: xr.Dataset) -> None:
    assert (cone_store.kernel_norm.values > 0).all()
    assert cone_store.cone_half_angle.sel(t0=12).item() == 0.0
    offsets = cone_store.offset_distance.sel(dt=2)
    distance = cone_store["values"].sel(metric="kernel_distance")
    assert offsets.sel(t1=4).item() == distance.sel(t0=4, t1=6).item()
    assert math.isnan(offsets.sel(t1=12).item())
    assert np.isfinite(cone_store.kernel_embedding.values).all()
    assert np.isfinite(cone_store.test_accuracy.values).all()
    assert cone_store.attrs["ntk_kind"] == "trace"


def test_rerun_computes_no_kernel(tmp_path: Path, cone_folder: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(cone_folder, out)
    assert run_cone(small_cone_config(), out, hooks=create_hooks()).kernels_computed == 0
    (out / "kernels" / "step-000000004.safetensors").unlink()
    assert run_cone(small_cone_config(), out, hooks=create_hooks()).kernels_computed == 1
    with xr.open_zarr(out / "results.zarr") as again, xr.open_zarr(cone_folder / "results.zarr") as first:
        assert np.array_equal(again["values"].values, first["values"].values)


def test_show_and_plot(tmp_path: Path, cone_folder: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(cone_folder, out)
    show_result = CliRunner().invoke(app, ["show", str(out)])
    assert show_result.exit_code == 0, show_result.output
    assert "cone half-angle" in show_result.output
    assert "kernel transition for dt = 2 steps" in show_result.output
    plotted = CliRunner().invoke(app, ["plot", str(out)])
    assert plotted.exit_code == 0, plotted.output
    figures = sorted((out / "figures").glob("cone-*.png"))
    assert [path.name for path in figures] == [
        "cone-distance-from-tau.png", "cone-embedding.png", "cone-kernel_distance.png", "cone-offset-distance.png",
    ]
    assert all(path.stat().st_size > 10_000 for path in figures)


def test_from_train_run(tmp_path: Path, hooks: Hooks) -> None:
    train(small_config(train__checkpoints="0,4,6,8"), tmp_path / "run", hooks=hooks)
    config = small_cone_config(cone__from_run=str(tmp_path / "run"), train__checkpoints="0,4,6,8")
    result = run_cone(config, tmp_path / "cone", hooks=hooks)
    assert result.kernels_computed == 5
    with xr.open_zarr(result.store) as store:
        assert list(store.t0.values) == [0, 4, 6, 8, 12]
        assert np.isfinite(store.offset_distance.sel(dt=2, t1=4).item())


def test_from_missing_run(tmp_path: Path, hooks: Hooks) -> None:
    with pytest.raises(UsageError, match="given as --from not found"):
        run_cone(small_cone_config(cone__from_run=str(tmp_path / "absent")), tmp_path / "cone", hooks=hooks)


def test_from_other_model(tmp_path: Path, hooks: Hooks) -> None:
    train(small_config(), tmp_path / "run", hooks=hooks)
    config = small_cone_config(cone__from_run=str(tmp_path / "run"), train__checkpoints="every:4", model__width=4)
    with pytest.raises(UsageError, match=r"another config \(model.width: 8 in the run, 4 here\)"):
        run_cone(config, tmp_path / "cone", hooks=hooks)


def test_from_incomplete_run(tmp_path: Path, hooks: Hooks) -> None:
    train(small_config(), tmp_path / "run", hooks=hooks, stop_at=5)
    config = small_cone_config(cone__from_run=str(tmp_path / "run"), train__checkpoints="every:4")
    with pytest.raises(UsageError, match=r"is incomplete: checkpoint\(s\) \[8, 12\]"):
        run_cone(config, tmp_path / "cone", hooks=hooks)


def test_memory_budget_rejected_before_training(tmp_path: Path) -> None:
    args = [
        "cone", "--model", "mlp", "--dataset", "synthetic", "--steps", "4", "--batch-size", "16",
        "--ntk-kind", "full", "--ntk-samples", "500", "--ntk-memory", "1", "--out", str(tmp_path / "out"),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "over the budget of 1 MiB; lower --ntk-samples, use --ntk-kind trace or logit-sum, or raise --ntk-memory" in result.stderr
    assert not (tmp_path / "out").exists()


def test_angles_from_distance() -> None:
    assert angles_degrees(np.array([0.0, 1.0, 2.0])) == pytest.approx([0.0, 90.0, 180.0])


def test_half_angle_is_largest_later_angle() -> None:
    distance = np.array([[0.0, 1.0, 0.5], [1.0, 0.0, 0.0], [0.5, 0.0, 0.0]])
    assert cone_half_angles(np.array([0, 1, 2]), distance) == pytest.approx([90.0, 0.0, 0.0])


def test_mds_recovers_points_on_a_line() -> None:
    points = np.array([0.0, 1.0, 3.0, 7.0])
    embedding = classical_mds(np.abs(points[:, None] - points[None, :]))
    recovered = np.abs(embedding[:, 0][:, None] - embedding[:, 0][None, :])
    assert np.allclose(recovered, np.abs(points[:, None] - points[None, :]))
    # The second eigenvalue is rounding noise of about 1e-16, so its coordinates are about 1e-8.
    assert np.allclose(embedding[:, 1], 0.0, atol=1e-6)


def test_offset_distances_pair_exact_steps() -> None:
    distance = np.arange(16.0).reshape(4, 4)
    result = offset_distances(np.array([0, 5, 10, 12]), distance, 5)
    assert result[0] == distance[0, 1]
    assert result[1] == distance[1, 2]
    assert np.isnan(result[2:]).all()


def test_kernel_transition_rule() -> None:
    steps = np.array([0, 10, 20, 30, 40, 50, 60, 70])
    curve = np.array([0.5, 0.9, 0.6, 0.3, 0.08, 0.05, 0.05, 0.05])
    # Late level 0.05 (median of the last two points), limit 0.05 + 0.1 * 0.85 = 0.135.
    assert kernel_transition(steps, curve) == 40


def test_kernel_transition_step_on_store(cone_store: xr.Dataset) -> None:
    step = kernel_transition_step(cone_store, 2)
    assert step is None or step in STEPS


def test_chaos_only_metric_rejected(tmp_path: Path, hooks: Hooks) -> None:
    with pytest.raises(UsageError, match="invalid metric 'loss_barrier' for cone: it applies to chaos experiments only"):
        run_cone(small_cone_config(cone__metrics=["loss_barrier"]), tmp_path, hooks=hooks)
