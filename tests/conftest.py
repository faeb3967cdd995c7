"""Shared fixtures: small configs on synthetic data that run in a fraction of a second."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from twophase.cli.app import app
from twophase.core.chaos import ChaosConfig
from twophase.core.cone import ConeConfig
from twophase.core.config import RunConfig, load_config
from twophase.core.plugins import Hooks, create_hooks

SMALL_RUN = {
    "model.name": "cnn",
    "model.width": 8,
    "model.options": {"depth": 2},
    "data.name": "synthetic",
    "data.options": {"train_size": 96, "test_size": 48, "image_size": 8, "classes": 4},
    "data.augmentation": "flip-crop",
    "optimizer.milestones": ["8"],
    "train.length": "12",
    "train.batch_size": 16,
    "train.checkpoints": "every:4",
}


def small_config(**overrides: Any) -> RunConfig:
    """Return a 12-step cnn run on 8x8 synthetic images; keyword keys use __ for dots."""
    values = dict(SMALL_RUN)
    values.update({key.replace("__", "."): value for key, value in overrides.items()})
    return load_config(None, values)


@pytest.fixture
def hooks() -> Hooks:
    return create_hooks()


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep decoded-image caches of the tests out of the user's cache folder."""
    monkeypatch.setenv("TWOPHASE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


SMALL_CHAOS = {
    **SMALL_RUN,
    "model.options": {"depth": 2, "batchnorm": True},
    "train.length": "24",
    "chaos.t0": "0,2,6",
    "chaos.t1": "0,2,6,12,24",
    "chaos.alpha_points": 3,
    "chaos.bn_batches": 2,
    "chaos.test_subset": 32,
}


def small_chaos_config(**overrides: Any) -> ChaosConfig:
    """Return a 24-step chaos experiment of a BatchNorm cnn on 8x8 synthetic images."""
    values = dict(SMALL_CHAOS)
    values.update({key.replace("__", "."): value for key, value in overrides.items()})
    return load_config(None, values, kind=ChaosConfig)


SMALL_CONE = {
    **SMALL_RUN,
    "train.checkpoints": "0,4,8",
    "cone.dts": ["2"],
    "ntk.samples": 12,
}


def small_cone_config(**overrides: Any) -> ConeConfig:
    """Return a cone experiment over a 12-step cnn run on 8x8 synthetic images."""
    values = dict(SMALL_CONE)
    values.update({key.replace("__", "."): value for key, value in overrides.items()})
    return load_config(None, values, kind=ConeConfig)


@pytest.fixture(scope="session")
def demo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output folder of `twophase demo`, run once for the whole session."""
    out = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    (out / "demo-output.txt").write_text(result.output, encoding="utf-8")
    return out


def write_image_folder(root: Path, classes: list[str], counts: tuple[int, int], size: int) -> Path:
    """Write random RGB PNGs of `size` x `size` in train/<class>/ and test/<class>/; return `root`."""
    generator = np.random.default_rng(0)
    for split, count in zip(("train", "test"), counts):
        for label in classes:
            folder = root / split / label
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = generator.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{index}.png")
    return root
