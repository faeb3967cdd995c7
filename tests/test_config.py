"""Config files, override order and validation."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest

from twophase.core.chaos import ChaosConfig
from twophase.core.config import RunConfig, config_from_dict, load_config
from twophase.core.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_are_reference_setup() -> None:
    config = load_config()
    assert config.optimizer.lr == 0.1
    assert config.optimizer.momentum == 0.9
    assert config.optimizer.weight_decay == 1e-4
    assert config.optimizer.milestones == ("80ep", "120ep")
    assert config.optimizer.lr_factor == 0.1
    assert config.train.length == "160ep"
    assert config.train.batch_size == 128


def test_file_overrides_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, '[optimizer]\nlr = 0.05\n[train]\nlength = 300\n')
    config = load_config(path)
    assert config.optimizer.lr == 0.05
    assert config.train.length == "300"
    assert config.optimizer.momentum == 0.9


def test_command_line_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[optimizer]\nlr = 0.05\nmomentum = 0.5\n')
    config = load_config(path, {"optimizer.lr": 0.2, "optimizer.momentum": None})
    assert config.optimizer.lr == 0.2
    assert config.optimizer.momentum == 0.5


def test_toml_round_trip() -> None:
    config = load_config(None, {"model.width": 8, "model.options": {"depth": 1}, "data.data_dir": "/data"})
    assert config_from_dict(tomllib.loads(config.to_toml())) == config


def test_integer_becomes_float() -> None:
    assert load_config(None, {"optimizer.lr": 1}).optimizer.lr == 1.0


def test_single_milestone_becomes_tuple() -> None:
    assert load_config(None, {"optimizer.milestones": 500}).optimizer.milestones == ("500",)


def test_milestones_as_comma_string(tmp_path: Path) -> None:
    path = write(tmp_path, '[optimizer]\nmilestones = "80ep,120ep"\n')
    assert load_config(path).optimizer.milestones == ("80ep", "120ep")


def test_milestones_none_string(tmp_path: Path) -> None:
    path = write(tmp_path, '[optimizer]\nmilestones = "none"\n')
    assert load_config(path).optimizer.milestones == ()


def test_fractional_length_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="train.length: expected a number of steps such as 300 or a string"):
        load_config(write(tmp_path, "[train]\nlength = 20.5\n"))


def test_invalid_toml_names_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[optimizer\nlr = 0.1\n")
    with pytest.raises(ConfigError, match=r"run.toml' is not valid TOML"):
        load_config(path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml")


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "[optimizer]\nlearning_rate = 0.1\nbeta = 2\n")
    with pytest.raises(ConfigError, match="optimizer.beta, optimizer.learning_rate"):
        load_config(path)


def test_unknown_section_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "[optimiser]\nlr = 0.1\n")
    with pytest.raises(ConfigError, match="unknown section.*optimiser"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[optimizer]\nlr = "fast"\n', "optimizer.lr: expected a number, got 'fast'"),
        ("[train]\nbatch_size = 12.5\n", "train.batch_size: expected an integer"),
        ("[train]\nbatch_size = true\n", "train.batch_size: expected an integer"),
        ('[optimizer]\nnesterov = "yes"\n', "optimizer.nesterov: expected true or false"),
        ("[model]\nname = 3\n", "model.name: expected a string"),
        ("[model]\noptions = 3\n", "model.options: expected a table"),
        ("optimizer = 3\n", r"optimizer in .*: expected a table, got 3 \(int\); write its keys under a \[optimizer\] header"),
    ],
)
def test_wrong_type_is_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_number_rejected(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="not a finite number"):
        load_config(write(tmp_path, f"[optimizer]\nweight_decay = {value}\n"))


def test_non_finite_option_rejected() -> None:
    with pytest.raises(ConfigError, match="model.options.scale"):
        load_config(None, {"model.options": {"scale": math.nan}})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("optimizer.lr", 0.0, "must be positive"),
        ("optimizer.lr", -0.1, "must be positive"),
        ("optimizer.momentum", 1.0, r"must be in \[0, 1\)"),
        ("optimizer.weight_decay", -1e-4, "cannot be negative"),
        ("train.batch_size", 0, "must be positive"),
        ("train.batch_size", -5, "must be positive"),
        ("train.eval_batch_size", 0, "must be positive"),
        ("train.length", "0", "must be positive"),
        ("train.length", "end", "must be a number of steps or epochs"),
        ("train.length", "ten", "invalid step 'ten'"),
        ("train.checkpoints", "lin:0:10", "expected lin:START:STOP:N"),
        ("train.device", "tpu", "must be one of auto, cpu, cuda"),
        ("data.augmentation", "mixup", "must be one of auto, flip-crop, none"),
        ("model.width", 0, "must be positive"),
        ("train.init_seed", -1, r"must lie in \[0, 2\*\*63\)"),
        ("train.data_seed", 2**64, r"must lie in \[0, 2\*\*63\)"),
    ],
)
def test_invalid_value_is_named(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        load_config(None, {key: value})
    assert key in str(raised.value)


def test_nesterov_needs_momentum() -> None:
    with pytest.raises(ConfigError, match="needs momentum > 0"):
        load_config(None, {"optimizer.nesterov": True, "optimizer.momentum": 0.0})


def test_config_is_frozen() -> None:
    config = RunConfig()
    with pytest.raises(AttributeError):
        config.optimizer.lr = 0.5  # type: ignore[misc]


def test_list_as_comma_string(tmp_path: Path) -> None:
    path = write(tmp_path, '[chaos]\nseeds = "0,1"\nmetrics = "param_cosine,disagreement"\n')
    config = load_config(path, kind=ChaosConfig)
    assert config.chaos.seeds == (0, 1)
    assert config.chaos.metrics == ("param_cosine", "disagreement")


def test_non_integer_in_list_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="chaos.seeds: 'x' in the list is not an integer"):
        load_config(write(tmp_path, '[chaos]\nseeds = "0,x"\n'), kind=ChaosConfig)


def test_integer_grids_accepted_in_toml(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[train]\nlength = 40\ncheckpoints = 10\n[chaos]\nt0 = 0\nt1 = 40\n", encoding="utf-8")
    config = load_config(path, kind=ChaosConfig)
    assert config.train.checkpoints == "10"
    assert config.chaos.t0 == "0"
    assert config.chaos.t1 == "40"
