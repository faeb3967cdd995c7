"""`twophase show` and `twophase plot` on small chaos stores written with xarray, and the analysis behind them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from typer.testing import CliRunner

from twophase.cli.app import app
from twophase.core.analysis import control_floor, final_values, transition_attrs, transition_step

runner = CliRunner()

T0 = np.array([0, 2, 8, 32, 128], dtype=np.int64)
T1 = np.array([0, 2, 8, 32, 128, 512], dtype=np.int64)
TOTAL_STEPS = 512
METRICS = ("param_cosine", "param_distance", "loss_barrier", "error_barrier", "disagreement")
LONG_NAMES = (
    "parameter cosine dissimilarity",
    "parameter L2 distance",
    "test loss barrier",
    "test error barrier",
    "test disagreement",
)
UNITS = ("1", "1", "nats", "1", "1")
ALPHA = np.linspace(0.0, 1.0, 5)

# Final-t1 values per t0 (rows of T0): C, L2 distance, B, error barrier, D. B falls below
# 0.1 nats from t0 = 32 on, so the transition step at the default threshold is 32. The
# cell (t0 = 8, t1 = 512) diverged, so the row of t0 = 8 has no final value.
FINAL = np.array(
    [
        [3.1e-1, 41.0, 2.30, 0.60, 0.52],
        [2.2e-1, 35.0, 1.70, 0.45, 0.41],
        [1.5e-1, 28.0, 1.20, 0.30, 0.33],
        [4.0e-4, 1.2, 0.05, 0.01, 0.03],
        [2.5e-6, 0.1, 0.002, 0.0, 0.004],
    ]
)
LAST = len(T1) - 1
DIVERGED = ((2, LAST),)  # (t0, t1) indices of diverged cells
TRANSITION = 32
CONTROL_FINAL = np.zeros(len(METRICS))


def _attrs(long_name: str, units: str) -> dict[str, str]:
    return {"long_name": long_name, "units": units}


def _values(final: np.ndarray, diverged: tuple[tuple[int, int], ...]) -> tuple[np.ndarray, np.ndarray]:
    """Fill (t0, t1, metric) by growing each row towards its final value; NaN where t1 < t0 or diverged."""
    values = np.full((len(T0), len(T1), len(METRICS)), np.nan)
    status = np.zeros((len(T0), len(T1)), dtype=np.int8)
    for i, t0 in enumerate(T0):
        for j, t1 in enumerate(T1):
            if t1 >= t0:
                values[i, j] = final[i] * (1 + t1 - t0) / (1 + TOTAL_STEPS - t0)
                status[i, j] = 1
    for cell in diverged:
        values[cell] = np.nan
        status[cell] = 2
    return values, status


def chaos_dataset(
    seeds: int | None = None, final: np.ndarray = FINAL, diverged: tuple[tuple[int, int], ...] = DIVERGED
) -> xr.Dataset:
    """Build a chaos store following the schema, with a leading `seed` dimension when `seeds` is set."""
    values, status = _values(final, diverged)
    # Curves that rise by the barrier in the middle of the path, NaN where the cell has no value.
    bump = 4 * ALPHA * (1 - ALPHA)
    barrier_curve = 0.4 + bump * values[:, :, 2:3]
    error_curve = 0.1 + bump * values[:, :, 3:4]
    control = np.where(T1[:, None] >= 16, CONTROL_FINAL[None, :], np.nan)
    control = np.broadcast_to(control, (len(T1), len(METRICS))).copy()
    steps = np.arange(TOTAL_STEPS + 1)
    train_loss = np.where(steps > 0, 2.3 / np.sqrt(1 + steps), np.nan)

    variables = {
        "values": (("t0", "t1", "metric"), values, _attrs("parent vs twin metric at t1", "1")),
        "status": (
            ("t0", "t1"),
            status,
            {**_attrs("state of the (t0, t1) cell", "1"), "flag_values": [0, 1, 2, 3], "flag_meanings": "pending done diverged failed"},
        ),
        "barrier_curve": (("t0", "t1", "alpha"), barrier_curve, _attrs("test loss on the linear path", "nats")),
        "error_curve": (("t0", "t1", "alpha"), error_curve, _attrs("test error on the linear path", "1")),
        "control": (("t1", "metric"), control, _attrs("control twin metric at t1", "1")),
        "requested_norm": (("t0",), np.full(len(T0), 1e-3), _attrs("requested perturbation norm", "1")),
        "perturbation_norm": (("t0",), np.full(len(T0), 1.0002e-3), _attrs("realized perturbation norm", "1")),
        "changed_fraction": (("t0",), np.full(len(T0), 0.9981), _attrs("fraction of parameters changed", "1")),
        "train_loss": (("step",), train_loss, _attrs("parent training loss", "nats")),
        "test_loss": (("t1",), 2.3 / np.sqrt(1 + T1), _attrs("parent test loss", "nats")),
        "test_accuracy": (("t1",), 1 - 0.9 / np.sqrt(1 + T1), _attrs("parent test accuracy", "1")),
    }
    coords = {
        "t0": ("t0", T0, _attrs("branch step", "steps")),
        "t1": ("t1", T1, _attrs("measurement step", "steps")),
        "metric": ("metric", np.array(METRICS, dtype=object)),
        "metric_long_name": ("metric", np.array(LONG_NAMES, dtype=object)),
        "metric_units": ("metric", np.array(UNITS, dtype=object)),
        "alpha": ("alpha", ALPHA, _attrs("weight of the parent", "1")),
        "step": ("step", steps, _attrs("optimizer steps completed", "steps")),
    }
    attrs = {
        "experiment": "chaos",
        "config": json.dumps({"model": {"name": "cnn"}}),
        "versions": json.dumps({"twophase": "test"}),
        "device": "cpu",
        "deterministic": True,
        "steps_per_epoch": 16,
        "total_steps": TOTAL_STEPS,
        "created": "2026-01-01T00:00:00+00:00",
        "control_t0": 16,
        "perturbation": "gaussian",
        "eps": 1e-3,
    }
    dataset = xr.Dataset(variables, coords=coords, attrs=attrs)
    if seeds is None:
        return dataset
    return _with_seeds(dataset, seeds)


def _with_seeds(dataset: xr.Dataset, seeds: int) -> xr.Dataset:
    """Stack `seeds` copies, seed k scaled by 1 + 0.1 k, under a leading seed dimension."""
    copies = []
    for seed in range(seeds):
        copy = dataset.copy(deep=True)
        for name in ("values", "control", "perturbation_norm"):
            copy[name] = copy[name] * (1 + 0.1 * seed)
        copies.append(copy)
    stacked = xr.concat(copies, dim="seed", data_vars="all", coords="minimal", compat="override", join="exact")
    stacked = stacked.assign_coords(seed=("seed", np.arange(seeds, dtype=np.int64)))
    for name in stacked.data_vars:
        stacked[name] = stacked[name].transpose("seed", ...)
        stacked[name].attrs = dataset[name].attrs
    stacked["status"] = stacked["status"].astype(np.int8)
    return stacked


def write_store(out: Path, dataset: xr.Dataset) -> Path:
    store = out / "results.zarr"
    dataset.to_zarr(store, mode="w", zarr_format=3, consolidated=False)
    return store


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def table_rows(output: str) -> dict[str, list[str]]:
    """Return the cells of each body row of the printed table, keyed by the t0 cell."""
    rows = {}
    for line in output.splitlines():
        if line.startswith("│"):
            cells = [cell.strip() for cell in line.strip("│").split("│")]
            if cells[0]:
                rows[cells[0]] = cells
    return rows


@pytest.fixture
def out(tmp_path: Path) -> Path:
    write_store(tmp_path, chaos_dataset())
    return tmp_path


def test_transition_step_by_hand() -> None:
    assert transition_step(chaos_dataset()) == TRANSITION


def test_transition_step_threshold_moves_it() -> None:
    assert transition_step(chaos_dataset(), threshold=0.01) == 128


def test_transition_step_none() -> None:
    assert transition_step(chaos_dataset(), threshold=0.001) is None


def test_transition_step_nan_not_below() -> None:
    dataset = chaos_dataset(diverged=DIVERGED + ((3, LAST),))  # t0 = 32 diverged too
    assert transition_step(dataset) == 128


def test_transition_step_last_nan_gives_none() -> None:
    dataset = chaos_dataset(diverged=DIVERGED + ((4, LAST),))
    assert transition_step(dataset) is None


@pytest.mark.parametrize(
    ("barriers", "expected"),
    [
        # Mean 0.09 < 0.1 although one seed is above: the mean decides, not every seed.
        ((0.02, 0.16), 32),
        # Mean 0.11 > 0.1 although one seed is below: the mean decides, not any seed.
        ((0.06, 0.16), 128),
    ],
)
def test_transition_step_mean_over_seeds(barriers: tuple[float, float], expected: int) -> None:
    copies = []
    for barrier in barriers:
        final = FINAL.copy()
        final[3, 2] = barrier
        copies.append(chaos_dataset(final=final))
    dataset = xr.concat(copies, dim="seed", data_vars="all", coords="minimal", compat="override", join="exact")
    assert transition_step(dataset) == expected


def test_final_values_at_last_t1() -> None:
    final = final_values(chaos_dataset())
    assert float(final["value"].sel(t0=2, metric="loss_barrier")) == pytest.approx(1.70)
    assert np.isnan(float(final["value"].sel(t0=8, metric="loss_barrier")))
    assert "spread" not in final


def test_final_values_seed_spread() -> None:
    final = final_values(chaos_dataset(seeds=3))
    # Seeds scale the values by 1, 1.1 and 1.2: mean 1.1 times, sample std 0.1 times.
    assert float(final["value"].sel(t0=2, metric="loss_barrier")) == pytest.approx(1.70 * 1.1)
    assert float(final["spread"].sel(t0=2, metric="loss_barrier")) == pytest.approx(1.70 * 0.1)


def test_control_floor_at_last_t1() -> None:
    floor = control_floor(chaos_dataset())
    assert floor["value"].sel(metric="loss_barrier").item() == 0.0


def test_show_prints_every_t0(out: Path) -> None:
    code, output = invoke("show", str(out))
    assert code == 0, output
    rows = table_rows(output)
    assert sorted(rows, key=int) == [str(t0) for t0 in T0]
    assert rows["2"][1] == "2.20e-01"
    assert rows["2"][2] == "1.7000"
    assert rows["8"][1] == "diverged"
    assert "1 diverged" in rows["8"]


def test_show_control_and_transition(out: Path) -> None:
    code, output = invoke("show", str(out))
    assert code == 0, output
    assert "control twin (no perturbation, branched at t0 = 16) at t1 = 512: C 0.00e+00, B 0.0000, D 0.0000" in output
    assert f"transition step: {TRANSITION} (threshold 0.1 nats)" in output
    assert "below the threshold at t1 = 512" in output


def test_show_leaves_store_unchanged(out: Path) -> None:
    before = dict(zarr.open_group(out / "results.zarr", mode="r").attrs)
    assert invoke("show", str(out), "--threshold", "0.01")[0] == 0
    assert dict(zarr.open_group(out / "results.zarr", mode="r").attrs) == before


def test_show_threshold_defaults_to_store(tmp_path: Path) -> None:
    dataset = chaos_dataset()
    dataset.attrs["transition_threshold"] = 0.001
    write_store(tmp_path, dataset)
    code, output = invoke("show", str(tmp_path))
    assert code == 0, output
    assert "(threshold 0.001 nats)" in output


def test_show_reports_none(out: Path) -> None:
    code, output = invoke("show", str(out), "--threshold", "0.001")
    assert code == 0, output
    assert "transition step: none" in output


def test_transition_attrs(out: Path) -> None:
    dataset = xr.open_zarr(out / "results.zarr", consolidated=False).load()
    assert transition_attrs(dataset, 0.01) == {"transition_step": 128, "transition_threshold": 0.01}
    assert transition_attrs(dataset, 0.001)["transition_step"] == -1


def test_show_status_fill_value(tmp_path: Path) -> None:
    # A pending final cell (status 0, no value) at t0 = 128, with status written with
    # _FillValue 0, which xarray decodes as NaN in a float array.
    dataset = chaos_dataset()
    dataset["values"][4, LAST] = np.nan
    dataset["status"][4, LAST] = 0
    dataset["status"].encoding = {"_FillValue": 0}
    write_store(tmp_path, dataset)
    code, output = invoke("show", str(tmp_path))
    assert code == 0, output
    assert table_rows(output)["128"][1] == "pending"
    assert "cells with t1 >= t0: 1 pending, 18 done, 1 diverged" in output
    assert "transition step: none" in output


def test_show_rejects_nan_threshold(out: Path) -> None:
    code, output = invoke("show", str(out), "--threshold", "nan")
    assert code == 2
    assert "invalid transition threshold nan" in output


def test_show_accepts_store_path(out: Path) -> None:
    code, output = invoke("show", str(out / "results.zarr"))
    assert code == 0, output
    assert f"transition step: {TRANSITION}" in output


def test_show_with_seeds(tmp_path: Path) -> None:
    write_store(tmp_path, chaos_dataset(seeds=3))
    code, output = invoke("show", str(tmp_path))
    assert code == 0, output
    assert "mean ± std over 3 seeds" in output
    assert table_rows(output)["2"][2] == "1.8700"  # 1.70 times the mean scale 1.1
    assert "± 0.1700" in output  # 1.70 times the sample std 0.1
    assert "at t1 = 512, mean over seeds" in output
    assert f"transition step: {TRANSITION}" in output


def test_plot_writes_pngs(out: Path) -> None:
    code, output = invoke("plot", str(out))
    assert code == 0, output
    names = ["chaos-param_cosine.png", "chaos-loss_barrier.png", "chaos-disagreement.png", "chaos-final.png"]
    for name in names:
        path = out / "figures" / name
        assert str(path) in output
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 10_000


def test_plot_with_seeds(tmp_path: Path) -> None:
    write_store(tmp_path, chaos_dataset(seeds=3))
    code, output = invoke("plot", str(tmp_path / "results.zarr"))
    assert code == 0, output
    path = tmp_path / "figures" / "chaos-final.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000


def test_plot_skips_missing_metric(tmp_path: Path) -> None:
    write_store(tmp_path, chaos_dataset().drop_sel(metric="param_cosine"))
    code, output = invoke("plot", str(tmp_path))
    assert code == 0, output
    assert "no metric 'param_cosine'" in output
    assert not (tmp_path / "figures" / "chaos-param_cosine.png").exists()
    assert (tmp_path / "figures" / "chaos-final.png").exists()


@pytest.mark.parametrize("command", ["show", "plot"])
def test_store_without_values(out: Path, command: str) -> None:
    shutil.rmtree(out / "results.zarr" / "values")
    code, output = invoke(command, str(out))
    assert code == 1
    assert "missing array values" in output
    assert "Traceback" not in output


@pytest.mark.parametrize("command", ["show", "plot"])
def test_missing_folder(tmp_path: Path, command: str) -> None:
    code, output = invoke(command, str(tmp_path / "absent"))
    assert code == 1
    assert "not found" in output
    assert "absent" in output


def test_folder_without_store(tmp_path: Path) -> None:
    code, output = invoke("show", str(tmp_path))
    assert code == 1
    assert "contains no results.zarr" in output


def test_unknown_store_kind_not_supported(tmp_path: Path) -> None:
    dataset = chaos_dataset()
    dataset.attrs["experiment"] = "sweep"
    write_store(tmp_path, dataset)
    code, output = invoke("show", str(tmp_path))
    assert code == 1
    assert "kind 'sweep'" in output
    assert "not support" in output


def test_cone_label_on_chaos_arrays_is_damaged(tmp_path: Path) -> None:
    dataset = chaos_dataset()
    dataset.attrs["experiment"] = "cone"
    write_store(tmp_path, dataset)
    code, output = invoke("show", str(tmp_path))
    assert code == 1
    assert "missing array kernel_norm" in output


def test_store_missing_attr(tmp_path: Path) -> None:
    dataset = chaos_dataset()
    del dataset.attrs["control_t0"]
    write_store(tmp_path, dataset)
    code, output = invoke("plot", str(tmp_path))
    assert code == 1
    assert "missing attr control_t0" in output
