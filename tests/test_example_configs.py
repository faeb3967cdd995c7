"""The example configs: they parse, match the reference setup, and the CPU ones still run."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from typer.testing import CliRunner

from tests.conftest import write_image_folder
from twophase.cli.app import app
from twophase.core.chaos import ChaosConfig
from twophase.core.cone import ConeConfig
from twophase.core.config import load_config
from twophase.core.steps import Step, StepGrid
from twophase.core.store import DONE

CONFIGS = Path(__file__).resolve().parent.parent / "examples" / "configs"
# CIFAR-10: 50,000 training images in batches of 128, the last partial batch dropped.
CIFAR10_STEPS_PER_EPOCH = 390
PAPER = {
    "paper-resnet20-chaos.toml": ("resnet20", ChaosConfig),
    "paper-resnet20-cone.toml": ("resnet20", ConeConfig),
    "paper-vgg16-chaos.toml": ("vgg16", ChaosConfig),
    "paper-vgg16-cone.toml": ("vgg16", ConeConfig),
}
CPU = {"cifar10-cpu-chaos.toml": ChaosConfig, "cifar10-cpu-cone.toml": ConeConfig}


def _steps(grid: str, steps_per_epoch: int, total: int) -> tuple[int, ...]:
    return StepGrid.parse(grid).resolve(steps_per_epoch, total)


def _milestones(config: ChaosConfig | ConeConfig, steps_per_epoch: int) -> list[int]:
    return [Step.parse(milestone).resolve(steps_per_epoch) for milestone in config.optimizer.milestones]


def _check_reference_optimizer(config: ChaosConfig | ConeConfig) -> None:
    assert config.optimizer.lr == 0.1
    assert config.optimizer.momentum == 0.9
    assert config.optimizer.weight_decay == 1e-4
    assert config.optimizer.lr_factor == 0.1
    assert not config.optimizer.nesterov
    assert config.train.batch_size == 128
    assert config.data.augmentation == "flip-crop"


@pytest.mark.parametrize("name", PAPER)
def test_paper_config_matches_reference(name: str) -> None:
    model, kind = PAPER[name]
    config = load_config(CONFIGS / name, kind=kind)
    _check_reference_optimizer(config)
    assert config.model.name == model
    assert config.model.width is None
    assert config.data.name == "cifar10"
    assert config.optimizer.milestones == ("80ep", "120ep")
    assert config.train.length == "160ep"

    total = Step.parse(config.train.length).resolve(CIFAR10_STEPS_PER_EPOCH)
    assert total == 62_400
    if kind is ChaosConfig:
        assert config.chaos.eps == 1e-7
        assert config.chaos.perturbation == "gaussian"
        grid = _steps(config.chaos.t0, CIFAR10_STEPS_PER_EPOCH, total)
    else:
        assert config.ntk.kind == "trace"
        grid = _steps(config.train.checkpoints, CIFAR10_STEPS_PER_EPOCH, total)
    # Dense in the first few thousand steps, sparse after.
    early = [step for step in grid if step <= 3000]
    late = [step for step in grid if step > 3000]
    assert len(early) >= 7
    assert max(np.diff(early)) <= 1000
    assert min(np.diff(late)) >= 1000 if len(late) > 1 else late


@pytest.mark.parametrize("name", [*PAPER, *CPU])
def test_config_comment_states_time_and_hardware(name: str) -> None:
    text = (CONFIGS / name).read_text(encoding="utf-8")
    assert re.search(r"\d+ (minutes|hours)", text)
    assert "2 cores" in text
    assert f"examples/configs/{name}" in text


@pytest.mark.parametrize("name", CPU)
def test_cpu_config_is_reduced_reference(name: str) -> None:
    config = load_config(CONFIGS / name, kind=CPU[name])
    _check_reference_optimizer(config)
    assert config.model.name == "resnet20"
    assert config.model.width == 8
    assert config.data.name == "imagefolder"

    total = int(config.train.length)
    assert total <= 2000
    # The decay keeps the reference's fractions of training: epochs 80 and 120 of 160.
    assert _milestones(config, CIFAR10_STEPS_PER_EPOCH) == [total // 2, total * 3 // 4]
    if CPU[name] is ChaosConfig:
        assert config.chaos.eps == 1e-7
        assert config.chaos.perturbation == "gaussian"
        assert 0 < config.chaos.test_subset < 10_000
        assert config.chaos.alpha_points < 11
        t0 = _steps(config.chaos.t0, CIFAR10_STEPS_PER_EPOCH, total)
        assert t0[0] == 0
        # The latest twin trains through both decays.
        assert t0[-1] < total // 2
        assert _steps(config.chaos.t1, CIFAR10_STEPS_PER_EPOCH, total)[-1] == total
    else:
        assert config.ntk.samples < 500


def _tiny_cifar_folder(root: Path) -> Path:
    """Write 32x32 PNGs for the ten CIFAR-10 classes, four per class for training and two for testing."""
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    return write_image_folder(root, classes, counts=(4, 2), size=32)


def test_cpu_chaos_config_runs_scaled_down(tmp_path: Path) -> None:
    data = _tiny_cifar_folder(tmp_path / "cifar")
    out = tmp_path / "out"
    scaled_down = [
        "--steps", "6", "--milestones", "3,5", "--batch-size", "8", "--checkpoints", "0,6",
        "--t0", "0,2", "--t1", "2,6", "--test-subset", "12", "--bn-batches", "1",
    ]
    result = CliRunner().invoke(
        app,
        ["chaos", "--config", str(CONFIGS / "cifar10-cpu-chaos.toml"), "--data-dir", str(data), *scaled_down, "--out", str(out), "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    with xr.open_zarr(out / "results.zarr", consolidated=False) as store:
        assert store.t0.values.tolist() == [0, 2]
        assert (store.status.values == DONE).all()
        assert store.alpha.size == 5
        assert float(store.control.sel(t1=6, metric="loss_barrier")) == 0.0
    saved = load_config(out / "config.toml", kind=ChaosConfig)
    assert saved.model.width == 8
    assert saved.chaos.eps == 1e-7


def test_cpu_cone_config_runs_scaled_down(tmp_path: Path) -> None:
    data = _tiny_cifar_folder(tmp_path / "cifar")
    out = tmp_path / "out"
    scaled_down = [
        "--steps", "6", "--milestones", "3,5", "--batch-size", "8", "--checkpoints", "0,2,4",
        "--dts", "2", "--taus", "0,2", "--ntk-samples", "10",
    ]
    result = CliRunner().invoke(
        app,
        ["cone", "--config", str(CONFIGS / "cifar10-cpu-cone.toml"), "--data-dir", str(data), *scaled_down, "--out", str(out), "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    with xr.open_zarr(out / "results.zarr", consolidated=False) as store:
        assert store.t1.values.tolist() == [0, 2, 4, 6]
        assert (store.status.values == DONE).all()
        assert np.isfinite(store.offset_distance.values).sum() == 3
