"""The chaos experiment end to end: control floor, store layout, resume, divergence."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from typer.testing import CliRunner

from tests.conftest import small_chaos_config, small_config
import twophase
from twophase import hookimpl
from twophase.cli.app import app
from twophase.core.chaos import run_chaos
from twophase.core.errors import ConfigError, OutputError, UnknownNameError, UsageError
from twophase.core.perturbation import PerturbationRequest
from twophase.core.plugins import Hooks, create_hooks
from twophase.core.specs import PerturbationSpec
from twophase.core.state import TrainingState
from twophase.core.store import DIVERGED, DONE, PENDING
from twophase.core.training import train


def open_store(out: Path) -> xr.Dataset:
    return xr.open_zarr(out / "results.zarr").load()


def assert_stores_equal(a: xr.Dataset, b: xr.Dataset) -> None:
    assert set(a.variables) == set(b.variables)
    for name in a.variables:
        assert np.array_equal(a[name].values, b[name].values, equal_nan=a[name].dtype.kind == "f"), name
    assert {k: v for k, v in a.attrs.items() if k != "created"} == {k: v for k, v in b.attrs.items() if k != "created"}


@pytest.fixture(scope="module")
def reference_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output folder of an uninterrupted run of the small chaos experiment."""
    out = tmp_path_factory.mktemp("reference")
    run_chaos(small_chaos_config(), out, hooks=create_hooks())
    return out


@pytest.fixture(scope="module")
def reference(reference_folder: Path) -> xr.Dataset:
    return open_store(reference_folder)


def test_control_twin_is_exactly_zero(reference: xr.Dataset) -> None:
    control_t0 = reference.attrs["control_t0"]
    assert control_t0 == 2
    measured = reference.control.sel(t1=reference.t1 >= control_t0)
    assert (measured.values == 0.0).all()
    assert np.isnan(reference.control.sel(t1=0).values).all()


def test_twins_measured_from_t0(reference: xr.Dataset) -> None:
    for t0 in reference.t0.values:
        for t1 in reference.t1.values:
            status = int(reference.status.sel(t0=t0, t1=t1))
            values = reference["values"].sel(t0=t0, t1=t1).values
            if t1 >= t0:
                assert status == DONE, (t0, t1)
                assert np.isfinite(values).all(), (t0, t1)
            else:
                assert status == PENDING, (t0, t1)
                assert np.isnan(values).all(), (t0, t1)


def test_perturbed_twins_differ(reference: xr.Dataset) -> None:
    cosine = reference["values"].sel(metric="param_cosine").isel(t1=-1)
    assert (cosine.values > 0).all()


def test_perturbation_records(reference: xr.Dataset) -> None:
    assert np.allclose(reference.requested_norm.values, 1e-7, rtol=1e-12)
    assert (reference.perturbation_norm.values > 0).all()
    assert ((reference.changed_fraction.values > 0) & (reference.changed_fraction.values <= 1)).all()


def test_barrier_curves_stored(reference: xr.Dataset) -> None:
    curve = reference.barrier_curve.isel(t0=0, t1=-1).values
    barrier = float(reference["values"].sel(metric="loss_barrier").isel(t0=0, t1=-1))
    assert np.isfinite(curve).all()
    assert barrier == pytest.approx(curve.max() - (curve[0] + curve[-1]) / 2)


def test_parent_curves(reference: xr.Dataset) -> None:
    assert np.isfinite(reference.train_loss.sel(step=slice(1, 24)).values).all()
    assert np.isfinite(reference.test_accuracy.values).all()


def test_metric_labels(reference: xr.Dataset) -> None:
    assert str(reference.metric_units.sel(metric="loss_barrier").values) == "nats"
    assert "cosine" in str(reference.metric_long_name.sel(metric="param_cosine").values)
    assert reference.attrs["experiment"] == "chaos"
    assert reference.attrs["steps_per_epoch"] == 6


def test_rerun_of_complete_experiment_is_identical(tmp_path: Path, reference: xr.Dataset) -> None:
    run_chaos(small_chaos_config(), tmp_path, hooks=create_hooks())
    result = run_chaos(small_chaos_config(), tmp_path, hooks=create_hooks())
    assert result.steps_taken == 0
    assert_stores_equal(open_store(tmp_path), reference)


KILL_SCRIPT = """
import os, signal, sys
from tests.conftest import small_chaos_config
import twophase
from twophase import hookimpl
from twophase.core.chaos import run_chaos
from twophase.core.plugins import create_hooks
from twophase.core.errors import TrainingInterrupted
from twophase.core.store import ResultStore

where, at = sys.argv[2], int(sys.argv[3])

class Killer:
    @hookimpl
    def on_step(self, run, step, loss):
        if where == "training" and run.name == "parent" and step == at:
            os.kill(os.getpid(), signal.SIGKILL)
        if where == "interrupt" and run.name == "parent" and step == at:
            os.kill(os.getpid(), signal.SIGINT)

    @hookimpl
    def on_checkpoint(self, run, step, state):
        if where == "measuring" and run.name == "parent" and step == at:
            os.kill(os.getpid(), signal.SIGKILL)

writes = 0
original_write = ResultStore.write

def write_then_maybe_die(self, *args, **kwargs):
    global writes
    writes += 1
    if where == "writing" and writes == at:
        os.kill(os.getpid(), signal.SIGKILL)
    return original_write(self, *args, **kwargs)

ResultStore.write = write_then_maybe_die
plugins = [Killer()] if where != "none" else []
try:
    run_chaos(small_chaos_config(), sys.argv[1], hooks=create_hooks(plugins=plugins))
except TrainingInterrupted:
    sys.exit(130)
"""


@pytest.mark.parametrize(
    ("where", "at", "code"), [("training", 9, -9), ("measuring", 12, -9), ("writing", 9, -9), ("interrupt", 9, 130)]
)
def test_kill_then_rerun_equals_uninterrupted(tmp_path: Path, reference: xr.Dataset, where: str, at: int, code: int) -> None:
    script = tmp_path / "kill.py"
    script.write_text(textwrap.dedent(KILL_SCRIPT), encoding="utf-8")
    out = tmp_path / "out"
    root = Path(__file__).resolve().parent.parent
    environment = {**os.environ, "PYTHONPATH": str(root)}
    command = [sys.executable, str(script), str(out)]
    killed = subprocess.run([*command, where, str(at)], env=environment, capture_output=True, timeout=120)
    assert killed.returncode == code, killed.stderr.decode()
    if where == "interrupt":
        assert (out / "states" / "seed-0" / "resume" / "interrupted" / "members.json").is_file()
    finished = subprocess.run([*command, "none", "0"], env=environment, capture_output=True, timeout=120)
    assert finished.returncode == 0, finished.stderr.decode()
    assert_stores_equal(open_store(out), reference)


def test_show_and_plot_on_real_store(reference_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(reference_folder, out)
    show_result = CliRunner().invoke(app, ["show", str(out)])
    assert show_result.exit_code == 0, show_result.output
    assert "control twin" in show_result.output
    assert "transition step" in show_result.output
    plotted = CliRunner().invoke(app, ["plot", str(out)])
    assert plotted.exit_code == 0, plotted.output
    figures = sorted((out / "figures").glob("*.png"))
    assert len(figures) == 4
    assert all(path.stat().st_size > 10_000 for path in figures)


def test_open_results_reads_output_folder(reference_folder: Path) -> None:
    results = twophase.open_results(reference_folder)
    assert results.attrs["experiment"] == "chaos"
    assert results["values"].dims == ("t0", "t1", "metric")


def test_config_mismatch_refused(tmp_path: Path, hooks: Hooks) -> None:
    run_chaos(small_chaos_config(), tmp_path, hooks=hooks)
    with pytest.raises(OutputError, match=r"chaos.eps: 1e-07 saved, 1e-05 now.*--overwrite"):
        run_chaos(small_chaos_config(chaos__eps=1e-5), tmp_path, hooks=hooks)


def test_train_folder_refused(tmp_path: Path, hooks: Hooks) -> None:
    train(small_config(), tmp_path, hooks=hooks)
    with pytest.raises(OutputError, match="contains a train run, not a chaos run"):
        run_chaos(small_chaos_config(), tmp_path, hooks=hooks)


def test_seeds_add_leading_dimension(tmp_path: Path, hooks: Hooks) -> None:
    run_chaos(small_chaos_config(chaos__seeds=[3, 4], chaos__t0="0,6", chaos__t1="6,24"), tmp_path, hooks=hooks)
    store = open_store(tmp_path)
    assert store["values"].dims == ("seed", "t0", "t1", "metric")
    assert list(store.seed.values) == [3, 4]
    assert not np.array_equal(store.train_loss.sel(seed=3).values, store.train_loss.sel(seed=4).values, equal_nan=True)
    assert (store.status.values == DONE).all()
    assert (store.control.sel(t1=24).values == 0.0).all()


class PoisonPlugin:
    """A perturbation that sets one weight to NaN, so that its twin diverges."""

    @hookimpl
    def register_perturbations(self) -> list[PerturbationSpec]:
        return [PerturbationSpec("poison", "sets the first weight to NaN")]

    @hookimpl
    def perturb(self, state: TrainingState, spec: PerturbationRequest, generator: torch.Generator) -> dict[str, torch.Tensor] | None:
        if spec.kind != "poison":
            return None
        delta = {name: torch.zeros(state.model[name].shape, dtype=torch.float64) for name in spec.parameters}
        delta[spec.parameters[0]].view(-1)[0] = float("nan")
        return delta


def test_diverged_twin_marked(tmp_path: Path) -> None:
    config = small_chaos_config(chaos__perturbation="poison", chaos__t0="2", chaos__t1="2,6,24")
    run_chaos(config, tmp_path, hooks=create_hooks(plugins=[PoisonPlugin()]))
    store = open_store(tmp_path)
    assert list(store.status.sel(t0=2).values) == [DONE, DIVERGED, DIVERGED]
    assert np.isnan(store["values"].sel(t0=2, t1=24).values).all()
    assert (store.control.sel(t1=24).values == 0.0).all()
    assert np.isfinite(store.train_loss.sel(step=24).values)


def test_t0_after_last_t1_rejected(tmp_path: Path, hooks: Hooks) -> None:
    with pytest.raises(ConfigError, match=r"step\(s\) \[20\] are never measured"):
        run_chaos(small_chaos_config(chaos__t0="0,20", chaos__t1="0,12"), tmp_path, hooks=hooks)


def test_bad_parameter_pattern_writes_nothing(tmp_path: Path, hooks: Hooks) -> None:
    with pytest.raises(UsageError, match="invalid perturbation parameters 'nope"):
        run_chaos(small_chaos_config(chaos__perturb_parameters="nope*"), tmp_path / "out", hooks=hooks)
    assert not (tmp_path / "out").exists()


def test_test_subset_larger_than_test_set_rejected(tmp_path: Path, hooks: Hooks) -> None:
    with pytest.raises(ConfigError, match="chaos.test_subset: 500 exceeds the 48 test images"):
        run_chaos(small_chaos_config(chaos__test_subset=500), tmp_path, hooks=hooks)


def test_unknown_metric_rejected(tmp_path: Path, hooks: Hooks) -> None:
    with pytest.raises(UnknownNameError, match="unknown metric 'kernel_distanse': did you mean kernel_distance"):
        run_chaos(small_chaos_config(chaos__metrics=["kernel_distanse"]), tmp_path, hooks=hooks)


def test_chaos_command(tmp_path: Path) -> None:
    args = [
        "chaos", "--model", "mlp", "--width", "16", "--dataset", "synthetic",
        "--data-option", "train_size=64", "--data-option", "test_size=32", "--data-option", "image_size=8",
        "--steps", "8", "--batch-size", "16", "--milestones", "none",
        "--t0", "0,4", "--t1", "4,8", "--alpha-points", "3", "--out", str(tmp_path), "--no-progress",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "results.zarr").is_dir()
    assert "twophase show" in result.output


def test_kernel_distance_in_chaos(tmp_path: Path, hooks: Hooks) -> None:
    config = small_chaos_config(
        chaos__metrics=["kernel_distance", "param_cosine"], chaos__t0="0,6", chaos__t1="6,24", ntk__samples=8,
    )
    run_chaos(config, tmp_path, hooks=hooks)
    store = open_store(tmp_path)
    distance = store["values"].sel(metric="kernel_distance")
    assert (distance.sel(t1=24).values > 0).all()
    assert (store.control.sel(metric="kernel_distance", t1=24).values == 0.0).all()


def test_ntk_samples_larger_than_data_rejected(tmp_path: Path, hooks: Hooks) -> None:
    config = small_chaos_config(chaos__metrics=["kernel_distance"], ntk__samples=1000)
    with pytest.raises(ConfigError, match="ntk.samples: 1000 exceeds the 96 training images"):
        run_chaos(config, tmp_path, hooks=hooks)
    assert not tmp_path.joinpath("results.zarr").exists()


def test_damaged_store_refused_on_resume(tmp_path: Path, reference_folder: Path, hooks: Hooks) -> None:
    out = tmp_path / "copy"
    shutil.copytree(reference_folder, out)
    shutil.rmtree(out / "results.zarr" / "values")
    with pytest.raises(OutputError, match="is damaged: array values is missing; move the folder aside, or rerun with --overwrite"):
        run_chaos(small_chaos_config(), out, hooks=hooks)


def test_transition_step_stored(reference: xr.Dataset) -> None:
    assert reference.attrs["transition_threshold"] == 0.1
    assert isinstance(reference.attrs["transition_step"], int)


def test_no_bn_recompute_flag(tmp_path: Path) -> None:
    args = [
        "chaos", "--model", "cnn", "--width", "4", "--dataset", "synthetic",
        "--data-option", "train_size=64", "--data-option", "test_size=32", "--data-option", "image_size=8",
        "--steps", "4", "--batch-size", "16", "--milestones", "none",
        "--t0", "0", "--t1", "4", "--alpha-points", "3", "--no-bn-recompute", "--out", str(tmp_path), "--no-progress",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert 'bn_batches = 0' in (tmp_path / "config.toml").read_text()
