"""The real CLI through Typer's test runner: commands, exit codes and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tests.test_training import SMALL_MODEL_ARGS, SMALL_RUN_ARGS
from twophase.cli.app import app

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_train_digits(tmp_path: Path) -> None:
    code, output = invoke(
        "train", "--dataset", "digits", "--model", "mlp", "--steps", "40",
        "--checkpoints", "every:20", "--out", str(tmp_path), "--no-progress",
    )
    assert code == 0, output
    assert "test accuracy" in output
    assert "s per step" in output
    assert (tmp_path / "checkpoints").is_dir()


def test_config_file_and_flag_override(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text('[optimizer]\nlr = 0.2\nmomentum = 0.5\n[train]\nlength = 12\n', encoding="utf-8")
    out = tmp_path / "out"
    code, output = invoke("train", *SMALL_MODEL_ARGS, "--config", str(config), "--lr", "0.05", "--out", str(out))
    assert code == 0, output
    saved = (out / "config.toml").read_text()
    assert "lr = 0.05" in saved
    assert "momentum = 0.5" in saved


def test_saved_config_reruns(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert invoke("train", *SMALL_RUN_ARGS, "--out", str(out))[0] == 0
    code, output = invoke("train", "--config", str(out / "config.toml"), "--out", str(out), "--no-progress")
    assert code == 0, output
    assert "trained steps" not in output


def test_plugins_lists_builtins() -> None:
    code, output = invoke("plugins")
    assert code == 0, output
    assert "twophase.plugins.models" in output
    assert "resnet20" in output
    assert "imagefolder" in output


def test_python_module_entry_point() -> None:
    result = subprocess.run([sys.executable, "-m", "twophase", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "train" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "resnet2"], "unknown model 'resnet2': did you mean resnet20"),
        (["--dataset", "cifar11"], "unknown data set 'cifar11': did you mean cifar10"),
        (["--checkpoints", "lin:0:5"], "expected lin:START:STOP:N"),
        (["--checkpoints", "0,100"], "past the end of training at step 12"),
        (["--checkpoints", "8,4"], "not increasing"),
        (["--batch-size", "0"], "train.batch_size: 0 must be positive"),
        (["--lr", "-1"], "optimizer.lr: -1.0 must be positive"),
        (["--lr", "nan"], "optimizer.lr: nan is not a finite number"),
        (["--epochs", "2"], "either --steps or --epochs"),
        (["--steps", "-5"], "steps cannot be negative"),
        (["--milestones", "6,1ep"], "strictly increasing"),
        (["--init-seed", "99999999999999999999"], "must lie in [0, 2**63)"),
        (["--model-option", "depth"], "expected KEY=VALUE"),
        (["--model-option", "depht=2"], "depht"),
        (["--width", "-4"], "model.width"),
        (["--augmentation", "mixup"], "data.augmentation"),
        (["--batch-size", "1000"], "exceeds the 96 training images"),
    ],
)
def test_usage_error_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["train", *SMALL_RUN_ARGS, *args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_unknown_timm_model_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--model", "timm:resnet1", "--dataset", "synthetic", "--steps", "2", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown timm model 'resnet1': did you mean" in result.stderr


def test_invalid_toml_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[train\n", encoding="utf-8")
    code, output = invoke("train", "--config", str(config), "--out", str(tmp_path / "out"))
    assert code == 2
    assert "is not valid TOML" in output


def test_unknown_config_key_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[train]\nsteps = 10\n", encoding="utf-8")
    code, output = invoke("train", "--config", str(config), "--out", str(tmp_path / "out"))
    assert code == 2
    assert "unknown key(s) train.steps" in output


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_exits_2(tmp_path: Path) -> None:
    code, output = invoke("train", *SMALL_RUN_ARGS, "--device", "cuda", "--out", str(tmp_path / "out"))
    assert code == 2
    assert "CUDA is not available" in output


def test_missing_cifar_exits_1(tmp_path: Path) -> None:
    code, output = invoke("train", "--dataset", "cifar10", "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"))
    assert code == 1, output
    assert "--download" in output
    assert "Traceback" not in output


def test_output_conflict_exits_1(tmp_path: Path) -> None:
    assert invoke("train", *SMALL_RUN_ARGS, "--out", str(tmp_path))[0] == 0
    code, output = invoke("train", *SMALL_RUN_ARGS, "--lr", "0.05", "--out", str(tmp_path))
    assert code == 1
    assert "--overwrite" in output


def test_debug_variable_shows_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWOPHASE_DEBUG", "1")
    result = runner.invoke(app, ["train", *SMALL_RUN_ARGS, "--model", "resnet2", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "Traceback" in result.stderr
    assert "UnknownNameError" in result.stderr
