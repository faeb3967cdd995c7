"""The training loop: exact resume, untouched parents, curves, faults and output folders."""

from __future__ import annotations

import fcntl
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from tests.conftest import small_config
from twophase import hookimpl
from twophase.core.errors import ConfigError, OutputError, PluginError, TrainingDivergedError, UsageError
from twophase.core.plugins import Hooks, create_hooks
from twophase.core.run import Run, build_model, build_optimizer, make_plan
from twophase.core.specs import ModelRequest, ModelSpec
from twophase.core.state import TrainingState, state_file_name
from twophase.core.stream import DataStream
from twophase.core.training import load_data, train

SMALL_MODEL_ARGS = [
    "--model", "cnn", "--width", "8", "--model-option", "depth=2",
    "--dataset", "synthetic",
    "--data-option", "train_size=96", "--data-option", "test_size=48",
    "--data-option", "image_size=8", "--data-option", "classes=4",
    "--augmentation", "flip-crop", "--milestones", "8",
    "--batch-size", "16", "--checkpoints", "every:4", "--no-progress",
]
SMALL_RUN_ARGS = [*SMALL_MODEL_ARGS, "--steps", "12"]


def final_state(out: Path, step: int = 12) -> TrainingState:
    return TrainingState.load(out / "checkpoints" / state_file_name(step))


def assert_states_equal(a: TrainingState, b: TrainingState) -> None:
    assert a.model.keys() == b.model.keys()
    for key in a.model:
        assert torch.equal(a.model[key], b.model[key]), key
    for index, entry in a.optimizer["state"].items():
        assert torch.equal(entry["momentum_buffer"], b.optimizer["state"][index]["momentum_buffer"]), index


def new_run(hooks: Hooks, name: str) -> tuple[Run, DataStream]:
    config = small_config()
    data = load_data(config, hooks)
    stream = DataStream(data, config.train.batch_size, config.train.data_seed, "flip-crop", torch.device("cpu"), True)
    plan = make_plan(config, stream.steps_per_epoch, "flip-crop", torch.device("cpu"))
    model = build_model(hooks.registry, config, data, torch.device("cpu"))
    return Run(name, config, plan, model, build_optimizer(model, config)), stream


def test_resume_in_new_process_is_bitwise(tmp_path: Path, hooks: Hooks) -> None:
    straight = tmp_path / "straight"
    train(small_config(), straight, hooks=hooks)

    resumed = tmp_path / "resumed"
    command = [sys.executable, "-m", "twophase", "train", *SMALL_RUN_ARGS, "--out", str(resumed)]
    first = subprocess.run([*command, "--stop-at", "5"], capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert (resumed / "resume" / state_file_name(5)).is_file()
    second = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert "resuming" in second.stdout

    assert_states_equal(final_state(straight), final_state(resumed))
    with xr.open_zarr(straight / "curves.zarr") as a, xr.open_zarr(resumed / "curves.zarr") as b:
        assert a.identical(b)


def test_branch_leaves_parent_untouched(hooks: Hooks) -> None:
    reference, stream = new_run(hooks, "reference")
    for step in range(12):
        reference.train_on(stream.batch(step))

    parent, _ = new_run(hooks, "parent")
    for step in range(5):
        parent.train_on(stream.batch(step))
    twin, _ = new_run(hooks, "twin")
    twin.load_state(parent.state())
    for step in range(5, 12):
        batch = stream.batch(step)
        twin.train_on(batch)
        parent.train_on(batch)

    assert_states_equal(parent.state(), reference.state())
    # An unperturbed twin in lockstep reproduces its parent exactly.
    assert_states_equal(twin.state(), parent.state())


def test_stop_and_resume_matches_straight_run(tmp_path: Path, hooks: Hooks) -> None:
    train(small_config(), tmp_path / "straight", hooks=hooks)
    stopped = train(small_config(), tmp_path / "split", hooks=hooks, stop_at=6)
    assert not stopped.complete
    resumed = train(small_config(), tmp_path / "split", hooks=hooks)
    assert resumed.start_step == 6
    assert not (tmp_path / "split" / "resume").exists()
    assert_states_equal(final_state(tmp_path / "straight"), final_state(tmp_path / "split"))


def test_complete_run_is_not_retrained(tmp_path: Path, hooks: Hooks) -> None:
    first = train(small_config(), tmp_path, hooks=hooks)
    again = train(small_config(), tmp_path, hooks=hooks)
    assert again.steps_taken == 0
    assert again.test_accuracy == first.test_accuracy


def test_curves_store(tmp_path: Path, hooks: Hooks) -> None:
    train(small_config(), tmp_path, hooks=hooks)
    with xr.open_zarr(tmp_path / "curves.zarr") as curves:
        assert list(curves.checkpoint.values) == [0, 4, 8, 12]
        assert math.isnan(float(curves.train_loss.sel(step=0)))
        assert np.isfinite(curves.train_loss.sel(step=slice(1, 12)).values).all()
        assert np.isfinite(curves.test_accuracy.values).all()
        assert (curves.batch_fingerprint.sel(step=slice(1, 12)).values != 0).all()
        assert np.allclose(curves.learning_rate.sel(step=slice(1, 8)).values, 0.1)
        assert np.allclose(curves.learning_rate.sel(step=slice(9, 12)).values, 0.01)
        assert curves.attrs["steps_per_epoch"] == 6
        assert curves.test_loss.attrs["units"] == "nats"


def test_checkpoints_saved_on_grid(tmp_path: Path, hooks: Hooks) -> None:
    train(small_config(train__checkpoints="0,5"), tmp_path, hooks=hooks)
    saved = sorted(path.name for path in (tmp_path / "checkpoints").iterdir())
    assert saved == [state_file_name(step) for step in (0, 5, 12)]


@pytest.mark.parametrize("model", ["timm:test_resnet", "torchvision:resnet18"])
def test_library_model_trains_three_steps(tmp_path: Path, hooks: Hooks, model: str) -> None:
    config = small_config(
        model__name=model, model__width=None, model__options={},
        data__options={"train_size": 32, "test_size": 16, "image_size": 32, "classes": 10},
        train__length="3", train__batch_size=8, train__checkpoints="0,3", optimizer__milestones=[],
    )
    result = train(config, tmp_path, hooks=hooks)
    assert result.step == 3
    assert math.isfinite(result.test_loss)
    start, end = TrainingState.load(tmp_path / "checkpoints" / state_file_name(0)), final_state(tmp_path, 3)
    assert any(not torch.equal(start.model[key], end.model[key]) for key in start.model)


def test_diverging_loss_names_step(tmp_path: Path, hooks: Hooks) -> None:
    config = small_config(
        model__name="mlp", model__options={"depth": 1}, optimizer__lr=1e12, optimizer__momentum=0.0,
    )
    with pytest.raises(TrainingDivergedError, match=r"at step \d+ of the run in '.*'; lower the learning rate"):
        train(config, tmp_path, hooks=hooks)


def test_output_path_is_file(tmp_path: Path, hooks: Hooks) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        train(small_config(), target, hooks=hooks)


def test_output_with_other_config_rejected(tmp_path: Path, hooks: Hooks) -> None:
    train(small_config(), tmp_path, hooks=hooks)
    with pytest.raises(OutputError, match=r"optimizer.lr: 0.1 saved, 0.05 now.*--overwrite"):
        train(small_config(optimizer__lr=0.05), tmp_path, hooks=hooks)


def test_overwrite_replaces_run(tmp_path: Path, hooks: Hooks) -> None:
    train(small_config(), tmp_path, hooks=hooks)
    result = train(small_config(optimizer__lr=0.05), tmp_path, hooks=hooks, overwrite=True)
    assert result.steps_taken == 12
    assert "lr = 0.05" in (tmp_path / "config.toml").read_text()


def test_rejected_model_option_writes_nothing(tmp_path: Path, hooks: Hooks) -> None:
    with pytest.raises(UsageError, match="depht"):
        train(small_config(model__options={"depht": 2}), tmp_path / "out", hooks=hooks)
    assert not (tmp_path / "out").exists()


def test_foreign_folder_rejected(tmp_path: Path, hooks: Hooks) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="are not a twophase run"):
        train(small_config(), tmp_path, hooks=hooks)


def test_unfinished_start_is_replaced(tmp_path: Path, hooks: Hooks) -> None:
    (tmp_path / "config.toml").write_text("[model]\nname = 'other'\n")
    result = train(small_config(), tmp_path, hooks=hooks)
    assert result.complete
    assert 'name = "cnn"' in (tmp_path / "config.toml").read_text()


def test_locked_folder_rejected(tmp_path: Path, hooks: Hooks) -> None:
    tmp_path.joinpath(".lock").touch()
    with open(tmp_path / ".lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        with pytest.raises(OutputError, match="in use by another twophase process"):
            train(small_config(), tmp_path, hooks=hooks)


def test_checkpoint_hook_cannot_change_saved_state(tmp_path: Path) -> None:
    class Vandal:
        @hookimpl
        def on_checkpoint(self, run: object, step: int, state: TrainingState) -> None:
            for tensor in state.model.values():
                tensor.zero_()

    train(small_config(), tmp_path / "vandal", hooks=create_hooks(plugins=[Vandal()]))
    train(small_config(), tmp_path / "plain", hooks=create_hooks())
    assert_states_equal(final_state(tmp_path / "vandal"), final_state(tmp_path / "plain"))


def test_repeated_milestone_rejected(tmp_path: Path, hooks: Hooks) -> None:
    with pytest.raises(ConfigError, match=r"optimizer.milestones.*strictly increasing"):
        train(small_config(optimizer__milestones=["6", "1ep"]), tmp_path, hooks=hooks)


def test_data_dir_saved_as_absolute_path(tmp_path: Path, hooks: Hooks, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    train(small_config(data__data_dir="unused"), tmp_path / "out", hooks=hooks, stop_at=4)
    assert f'data_dir = "{tmp_path / "unused"}"' in (tmp_path / "out" / "config.toml").read_text()


def test_moved_data_dir_resumes(tmp_path: Path, hooks: Hooks) -> None:
    train(small_config(data__data_dir=str(tmp_path / "old")), tmp_path / "out", hooks=hooks, stop_at=4)
    result = train(small_config(data__data_dir=str(tmp_path / "new")), tmp_path / "out", hooks=hooks)
    assert result.start_step == 4


def test_past_stop_step_rejected(tmp_path: Path, hooks: Hooks) -> None:
    train(small_config(), tmp_path, hooks=hooks, stop_at=6)
    with pytest.raises(ConfigError, match="already at step 6"):
        train(small_config(), tmp_path, hooks=hooks, stop_at=3)


def test_model_for_other_input_size_rejected(tmp_path: Path, hooks: Hooks) -> None:
    config = small_config(model__name="timm:vit_tiny_patch16_224", model__width=None, model__options={})
    with pytest.raises(UsageError, match=r"fails on 3x8x8 images.*img_size"):
        train(config, tmp_path, hooks=hooks)


def test_failing_model_build_names_plugin(tmp_path: Path) -> None:
    class Broken:
        @hookimpl
        def register_models(self) -> list[ModelSpec]:
            def build(request: ModelRequest) -> torch.nn.Module:
                raise RuntimeError("no weights")

            return [ModelSpec("broken", build, "a model that cannot be built")]

    hooks = create_hooks(plugins=[Broken()])
    config = small_config(model__name="broken", model__width=None, model__options={})
    with pytest.raises(PluginError, match=r"model 'broken' of plugin '.*' failed to build .*RuntimeError: no weights"):
        train(config, tmp_path, hooks=hooks)
