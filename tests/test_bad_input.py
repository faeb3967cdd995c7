"""Bad input through the real CLI: one line of error text that names the value and the fix.

Usage and config errors exit with code 2, missing data and output-folder conflicts with 1.
Most cases run `twophase train`, `chaos` or `cone` through Typer's runner on an 8-step
mlp run over 64 synthetic 8x8 images (16 per batch, so 4 steps per epoch).
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import Result
from PIL import Image
from typer.testing import CliRunner

from twophase.cli.app import app

runner = CliRunner()

TINY_DATA = [
    "--dataset", "synthetic", "--data-option", "train_size=64", "--data-option", "test_size=32",
    "--data-option", "image_size=8",
]
TINY_SCHEDULE = ["--batch-size", "16", "--milestones", "none", "--no-progress"]
TINY = ["--model", "mlp", "--width", "16", *TINY_DATA, "--steps", "8", *TINY_SCHEDULE]
TINY_CHAOS = ["--t0", "0,4", "--t1", "4,8", "--alpha-points", "3"]
TINY_CONE = ["--ntk-samples", "8", "--dts", "4"]

USAGE, FAILURE = 2, 1


def invoke(*args: str | Path) -> Result:
    return runner.invoke(app, [str(arg) for arg in args])


def assert_one_line_error(result: Result, exit_code: int, fragments: Sequence[str]) -> None:
    """Check the exit code and that standard error is one `error:` line containing every fragment."""
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0]


def command_args(command: str) -> list[str]:
    """Return the tiny run's options for `command`, with the experiment's own small settings."""
    extra = {"train": [], "chaos": TINY_CHAOS, "cone": TINY_CONE}[command]
    return [command, *TINY, *extra]


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


# Finished output folders of each kind, shared by the --from and --out cases.


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("finished")
    train_args = ["train", *TINY, "--checkpoints", "every:4"]
    commands = {
        "train": train_args,
        "partial": [*train_args, "--stop-at", "5"],
        "chaos": command_args("chaos"),
        "cone": ["cone", "--from", str(root / "train"), *TINY_CONE, "--no-progress"],
    }
    for name, args in commands.items():
        result = invoke(*args, "--out", root / name)
        assert result.exit_code == 0, result.output
    return {name: root / name for name in commands}


# Unknown names


@pytest.mark.parametrize(
    ("command", "args", "fragments"),
    [
        ("train", ["--model", "mlpp"], ["unknown model 'mlpp'", "did you mean mlp?"]),
        ("train", ["--model", "transformer"], ["unknown model 'transformer'", "known: cnn, mlp, resnet20"]),
        ("train", ["--dataset", "synthetik"], ["unknown data set 'synthetik'", "did you mean synthetic?"]),
        ("train", ["--dataset", "mnist"], ["unknown data set 'mnist'", "cifar10, cifar100, digits"]),
        ("chaos", ["--perturbation", "gausian"], ["unknown perturbation 'gausian'", "did you mean gaussian?"]),
        ("chaos", ["--perturbation", "dropout"], ["unknown perturbation 'dropout'", "known: coordinate, gaussian"]),
        ("chaos", ["--metrics", "loss_barier"], ["unknown metric 'loss_barier'", "did you mean loss_barrier"]),
        ("cone", ["--metrics", "kernel_distanse"], ["unknown metric 'kernel_distanse'", "did you mean kernel_distance"]),
        ("cone", ["--metrics", "kernel_distance,param_cosin"], ["unknown metric 'param_cosin'", "did you mean param_cosine"]),
    ],
)
def test_unknown_name_lists_matches(tmp_path: Path, command: str, args: list[str], fragments: list[str]) -> None:
    out = tmp_path / "out"
    result = invoke(*command_args(command), *args, "--out", out)
    assert_one_line_error(result, USAGE, fragments)
    assert not out.exists()


def test_unknown_library_model_lists_matches(tmp_path: Path) -> None:
    args = ["train", "--model", "torchvision:resnet1", *TINY_DATA, "--steps", "8", *TINY_SCHEDULE]
    result = invoke(*args, "--out", tmp_path / "out")
    assert_one_line_error(result, USAGE, ["unknown torchvision classification model 'resnet1'", "did you mean resnet18"])


@pytest.mark.parametrize(
    ("command", "text", "fragments"),
    [
        ("train", '[model]\nname = "vgg61"\n', ["unknown model 'vgg61'", "did you mean vgg16?"]),
        ("train", '[data]\nname = "cifar-10"\n', ["unknown data set 'cifar-10'", "did you mean cifar10"]),
        ("chaos", '[chaos]\nperturbation = "layer"\n', ["unknown perturbation 'layer'", "did you mean layerwise?"]),
        ("chaos", '[chaos]\nmetrics = ["disagreemnt"]\n', ["unknown metric 'disagreemnt'", "did you mean disagreement?"]),
    ],
)
def test_unknown_name_in_config_file(tmp_path: Path, command: str, text: str, fragments: list[str]) -> None:
    # The names are checked before anything loads, so the file needs no other setting.
    out = tmp_path / "out"
    result = invoke(command, "--config", write_config(tmp_path, text), "--no-progress", "--out", out)
    assert_one_line_error(result, USAGE, fragments)
    assert not out.exists()


# Step grids and step lists


@pytest.mark.parametrize(
    ("command", "args", "fragments"),
    [
        ("train", ["--checkpoints", "lin:0:5"], ["train.checkpoints", "'lin:0:5'", "expected lin:START:STOP:N"]),
        ("train", ["--checkpoints", "often"], ["train.checkpoints", "'often'", "expected an integer such as 300"]),
        ("train", ["--checkpoints", "log:1:8:one"], ["'log:1:8:one'", "N must be an integer of at least 2"]),
        ("train", ["--checkpoints", "range:0:8:3"], ["unknown range 'range'", "use lin:START:STOP:N"]),
        ("train", ["--checkpoints", ""], ["train.checkpoints", "it is empty", "give steps such as"]),
        ("train", ["--checkpoints", "0,,4"], ["'0,,4'", "empty item", "remove the extra comma"]),
        ("train", ["--checkpoints", "4,2"], ["'4,2'", "not increasing", "list the items in increasing order"]),
        ("train", ["--checkpoints", "lin:6:2:3"], ["'lin:6:2:3'", "STOP must exceed START"]),
        ("train", ["--checkpoints", "0,-2"], ["'-2'", "steps cannot be negative"]),
        ("train", ["--checkpoints", "every:0"], ["'every:0'", "it must be at least 1"]),
        ("train", ["--checkpoints", "0,20"], ["'0,20'", "step 20 lies past the end of training at step 8", "lower it or train longer"]),
        ("train", ["--checkpoints", "3ep"], ["'3ep'", "step 12 lies past the end of training at step 8"]),
        ("train", ["--milestones", "2,abc"], ["optimizer.milestones", "'abc'", "expected an integer such as 300"]),
        ("train", ["--milestones", "6,2"], ["optimizer.milestones", "steps [6, 2]", "strictly increasing"]),
        ("train", ["--milestones", "4,20"], ["optimizer.milestones", "step(s) [20] lie past the end of training at step 8", "lower them or train longer"]),
        ("train", ["--milestones", "1ep,3ep"], ["optimizer.milestones", "steps [4, 12]", "past the end of training"]),
        ("chaos", ["--t0", "0,20"], ["chaos.t0", "step 20 lies past the end of training at step 8"]),
        ("chaos", ["--t1", "4,20"], ["chaos.t1", "step 20 lies past the end of training at step 8"]),
        ("chaos", ["--t0", ""], ["chaos.t0", "it is empty"]),
        ("chaos", ["--t0", "4,0"], ["chaos.t0", "not increasing"]),
        ("chaos", ["--t1", "4,x"], ["chaos.t1", "'x'", "expected an integer such as 300"]),
        ("chaos", ["--t0", "0,6", "--t1", "2,4"], ["chaos.t0", "step(s) [6] are never measured", "extend chaos.t1 or drop those t0"]),
        ("chaos", ["--t0", "0,4,8", "--t1", "2,4"], ["chaos.t0", "step(s) [8] are never measured"]),
        ("cone", ["--dts", "20"], ["cone.dts", "step(s) [20] lie past the end of training at step 8", "lower them"]),
        ("cone", ["--dts", "3ep"], ["cone.dts", "steps [12]", "past the end of training"]),
        ("cone", ["--dts", "4,2"], ["cone.dts", "steps [4, 2]", "strictly increasing"]),
        ("cone", ["--dts", "2,2"], ["cone.dts", "steps [2, 2]", "strictly increasing"]),
        ("cone", ["--dts", "0"], ["cone.dts", "'0'", "must be a positive number of steps or epochs"]),
        ("cone", ["--dts", "soon"], ["cone.dts", "'soon'", "expected an integer such as 300"]),
        ("cone", ["--taus", "20"], ["cone.taus", "step(s) [20] lie past the end of training at step 8"]),
        ("cone", ["--taus", "8,4"], ["cone.taus", "steps [8, 4]", "strictly increasing"]),
        ("cone", ["--taus", "-1"], ["cone.taus", "'-1'", "steps cannot be negative"]),
        ("cone", ["--checkpoints", "0,4", "--dts", "2", "--taus", "0,3"], ["cone.taus", "step(s) [3] are not among the compared states", "pick taus from the steps 0, 2, 4, 6, 8"]),
    ],
)
def test_bad_step_grid_rejected(tmp_path: Path, command: str, args: list[str], fragments: list[str]) -> None:
    out = tmp_path / "out"
    result = invoke(*command_args(command), *args, "--out", out)
    assert_one_line_error(result, USAGE, fragments)
    assert not out.exists()


def test_bad_step_grid_in_config_file(tmp_path: Path) -> None:
    config = write_config(tmp_path, '[chaos]\nt0 = "lin:0:12:4"\nt1 = "8"\n')
    result = invoke("chaos", "--config", config, *TINY, "--out", tmp_path / "out")
    assert_one_line_error(result, USAGE, ["chaos.t0", "'lin:0:12:4'", "step 12 lies past the end of training at step 8"])


def test_default_milestones_allowed_past_end(tmp_path: Path) -> None:
    args = ["train", "--model", "mlp", "--width", "16", *TINY_DATA, "--steps", "8", "--batch-size", "16", "--no-progress"]
    result = invoke(*args, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output


def test_default_dt_allowed_past_end(tmp_path: Path) -> None:
    args = ["cone", "--model", "mlp", "--width", "16", *TINY_DATA, "--steps", "2", *TINY_SCHEDULE, "--ntk-samples", "8"]
    result = invoke(*args, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "the default dt of 1ep is step(s) [4], past the end of training at step 2" in result.stdout


# Numbers out of range, NaN and infinity


@pytest.mark.parametrize(
    ("command", "args", "fragments"),
    [
        ("train", ["--batch-size", "0"], ["train.batch_size: 0 must be positive"]),
        ("train", ["--batch-size", "-3"], ["train.batch_size: -3 must be positive"]),
        ("train", ["--eval-batch-size", "0"], ["train.eval_batch_size: 0 must be positive"]),
        ("train", ["--eval-batch-size", "-1"], ["train.eval_batch_size: -1 must be positive"]),
        ("train", ["--lr", "0"], ["optimizer.lr: 0.0 must be positive"]),
        ("train", ["--lr", "-0.1"], ["optimizer.lr: -0.1 must be positive"]),
        ("train", ["--lr", "nan"], ["optimizer.lr: nan is not a finite number"]),
        ("train", ["--lr", "inf"], ["optimizer.lr: inf is not a finite number"]),
        ("train", ["--momentum", "nan"], ["optimizer.momentum: nan is not a finite number"]),
        ("train", ["--weight-decay", "inf"], ["optimizer.weight_decay: inf is not a finite number"]),
        ("train", ["--lr-factor", "-inf"], ["optimizer.lr_factor: -inf is not a finite number"]),
        ("train", ["--steps", "0"], ["train.length: '0' must be positive"]),
        ("train", ["--steps", "-1"], ["train.length", "'-1'", "steps cannot be negative"]),
        ("train", ["--width", "0"], ["model.width: 0 must be positive"]),
        ("train", ["--width", "-2"], ["model.width: -2 must be positive"]),
        ("chaos", ["--eps", "0"], ["chaos.eps: 0.0 must be positive unless the perturbation is none"]),
        ("chaos", ["--eps", "-1e-7"], ["chaos.eps: -1e-07 must be zero or positive"]),
        ("chaos", ["--eps", "nan"], ["chaos.eps: nan is not a finite number"]),
        ("chaos", ["--eps", "inf"], ["chaos.eps: inf is not a finite number"]),
        ("chaos", ["--alpha-points", "1"], ["chaos.alpha_points: 1 must be from 2 (0 and 1) to 1001"]),
        ("chaos", ["--alpha-points", "0"], ["chaos.alpha_points: 0 must be from 2"]),
        ("chaos", ["--alpha-points", "-3"], ["chaos.alpha_points: -3 must be from 2"]),
        ("chaos", ["--alpha-points", "100000000"], ["chaos.alpha_points: 100000000 must be from 2 (0 and 1) to 1001"]),
        ("chaos", ["--bn-batches", "-1"], ["chaos.bn_batches: -1 cannot be negative"]),
        ("chaos", ["--test-subset", "-1"], ["chaos.test_subset: -1 cannot be negative"]),
        ("cone", ["--ntk-samples", "0"], ["ntk.samples: 0 must be positive"]),
        ("cone", ["--ntk-samples", "-4"], ["ntk.samples: -4 must be positive"]),
        ("cone", ["--ntk-memory", "0"], ["ntk.memory: 0 must be positive"]),
        ("train", ["--model-option", "depth=nan"], ["model.options.depth: nan is not a finite number"]),
        ("train", ["--model-option", "depth=-1"], ["invalid value -1 for option 'depth' of model 'mlp'", "it must be at least 0"]),
        ("train", ["--data-option", "train_size=inf"], ["data.options.train_size: inf is not a finite number"]),
        ("train", ["--data-option", "train_size=0"], ["option 'train_size' of data set 'synthetic' must be at least 1, got 0"]),
        ("train", ["--data-option", "image_size=-8"], ["option 'image_size' of data set 'synthetic' must be at least 1, got -8"]),
    ],
)
def test_bad_number_flag_rejected(tmp_path: Path, command: str, args: list[str], fragments: list[str]) -> None:
    out = tmp_path / "out"
    result = invoke(*command_args(command), *args, "--out", out)
    assert_one_line_error(result, USAGE, fragments)
    assert not out.exists()


@pytest.mark.parametrize(
    ("value", "fragments"),
    [
        ("0", ["--epochs: 0.0 must be positive"]),
        ("-2", ["--epochs: -2.0 must be positive"]),
        ("nan", ["--epochs: nan is not a finite number"]),
        ("inf", ["--epochs: inf is not a finite number"]),
        ("0.01", ["train.length: '0.01ep' is 0 steps at 4 steps per epoch", "train for at least 1 step"]),
    ],
)
def test_bad_epochs_rejected(tmp_path: Path, value: str, fragments: list[str]) -> None:
    args = ["train", "--model", "mlp", *TINY_DATA, "--epochs", value, *TINY_SCHEDULE]
    result = invoke(*args, "--out", tmp_path / "out")
    assert_one_line_error(result, USAGE, fragments)


@pytest.mark.parametrize(
    ("command", "text", "fragments"),
    [
        ("train", "[optimizer]\nlr = nan\n", ["optimizer.lr: nan is not a finite number"]),
        ("train", "[optimizer]\nmomentum = -inf\n", ["optimizer.momentum: -inf is not a finite number"]),
        ("train", "[train]\nbatch_size = 0\n", ["train.batch_size: 0 must be positive"]),
        ("train", "[train]\neval_batch_size = -5\n", ["train.eval_batch_size: -5 must be positive"]),
        ("train", "[train]\nlength = 0\n", ["train.length: '0' must be positive"]),
        ("train", "[train]\nlength = \"0ep\"\n", ["train.length: '0ep' must be positive"]),
        ("train", "[model.options]\ndepth = inf\n", ["model.options.depth: inf is not a finite number"]),
        ("train", "[data.options]\nnoise = [0.5, nan]\n", ["data.options.noise: nan is not a finite number"]),
        ("train", "[data.options.nested]\nscale = -inf\n", ["data.options.nested.scale: -inf is not a finite number"]),
        ("chaos", "[chaos]\neps = inf\n", ["chaos.eps: inf is not a finite number"]),
        ("chaos", "[chaos]\ntransition_threshold = nan\n", ["chaos.transition_threshold: nan is not a finite number"]),
        ("chaos", "[chaos]\ntransition_threshold = 0.0\n", ["chaos.transition_threshold: 0.0 must be positive"]),
        ("chaos", "[chaos]\nalpha_points = 1\n", ["chaos.alpha_points: 1 must be from 2"]),
        ("cone", "[ntk]\nsamples = 0\n", ["ntk.samples: 0 must be positive"]),
        ("cone", "[ntk]\nmemory = -1\n", ["ntk.memory: -1 must be positive"]),
    ],
)
def test_bad_number_in_config_file(tmp_path: Path, command: str, text: str, fragments: list[str]) -> None:
    # Only the model comes from a flag, so no flag overrides the file's values.
    args = [command, "--config", write_config(tmp_path, text), "--model", "mlp", "--no-progress"]
    out = tmp_path / "out"
    result = invoke(*args, "--out", out)
    assert_one_line_error(result, USAGE, fragments)
    assert not out.exists()


# Config files


@pytest.mark.parametrize(
    ("command", "text", "fragments"),
    [
        ("train", "[train\n", ["is not valid TOML", "at line 1, column 7"]),
        ("train", "[train]\nlength = 10\nlength = 12\n", ["is not valid TOML", "at line 3"]),
        ("train", "[train]\nsteps = 10\nfoo = 1\n", ["unknown key(s) train.foo, train.steps", "known keys in [train]: length, batch_size"]),
        ("train", "[optimizer]\nlearning_rate = 0.1\n", ["unknown key(s) optimizer.learning_rate", "known keys in [optimizer]: lr"]),
        ("train", "[trainer]\nlength = 10\n", ["unknown section(s) trainer", "known sections: model, data, optimizer, train"]),
        ("train", "[ntk]\nsamples = 4\n", ["unknown section(s) ntk", "known sections: model, data, optimizer, train"]),
        ("chaos", "[cone]\ndts = [\"2\"]\n", ["unknown section(s) cone", "known sections: model, data, optimizer, train, chaos, ntk"]),
        ("cone", "[chaos]\neps = 1e-7\n", ["unknown section(s) chaos", "known sections: model, data, optimizer, train, cone, ntk"]),
        ("cone", "[cone]\ntau = [\"0\"]\n", ["unknown key(s) cone.tau", "known keys in [cone]: from_run, metrics, dts, taus"]),
        ("train", "train = 3\n", ["invalid value for train in", "expected a table, got 3 (int)", "write its keys under a [train] header"]),
        ("train", '[train]\nbatch_size = "16"\n', ["train.batch_size: expected an integer, got '16' (str)"]),
        ("train", "[train]\nbatch_size = 12.5\n", ["train.batch_size: expected an integer, got 12.5 (float)"]),
        ("train", '[optimizer]\nlr = "fast"\n', ["optimizer.lr: expected a number, got 'fast' (str)"]),
        ("train", "[optimizer]\nnesterov = 1\n", ["optimizer.nesterov: expected true or false, got 1 (int)"]),
        ("train", "[train]\nlength = 1.5\n", ["train.length: expected a number of steps such as 300 or a string such as '5ep', got 1.5"]),
        ("train", "[train]\ncheckpoints = [0, 4]\n", ["train.checkpoints: expected a number of steps such as 300 or a string such as '5ep', got [0, 4] (list)"]),
        ("train", "[model]\nwidth = 2.0\n", ["model.width: expected an integer, got 2.0 (float)"]),
        ("train", "[model]\noptions = 3\n", ["model.options: expected a table, got 3 (int)"]),
        ("chaos", "[chaos]\nmetrics = [1]\n", ["chaos.metrics: expected a string, got 1 (int)"]),
        ("chaos", "[chaos]\nseeds = [0, 1.5]\n", ["chaos.seeds: expected an integer, got 1.5 (float)"]),
        ("chaos", "[chaos]\nt0 = [0]\n", ["chaos.t0: expected a number of steps such as 300 or a string such as '5ep', got [0] (list)"]),
        ("cone", "[cone]\ndts = 2.5\n", ["cone.dts: expected a list, got 2.5 (float)"]),
        ("cone", "[cone]\ndts = [2.5]\n", ["cone.dts: expected a number of steps such as 300 or a string such as '5ep', got 2.5"]),
    ],
)
def test_bad_config_file_rejected(tmp_path: Path, command: str, text: str, fragments: list[str]) -> None:
    path = write_config(tmp_path, text)
    out = tmp_path / "out"
    result = invoke(command, "--config", path, "--model", "mlp", "--no-progress", "--out", out)
    assert_one_line_error(result, USAGE, fragments)
    assert not out.exists()


def test_unreadable_config_file_rejected(tmp_path: Path) -> None:
    missing, folder, binary = tmp_path / "missing.toml", tmp_path / "folder", tmp_path / "binary.toml"
    folder.mkdir()
    binary.write_bytes(b"\xff\xfe[train]\n")
    cases = {
        missing: [f"config file '{missing}' not found", "check the path"],
        folder: [f"cannot read config file '{folder}'", "Is a directory"],
        binary: [f"cannot read config file '{binary}'", "can't decode byte 0xff"],
    }
    for path, fragments in cases.items():
        result = invoke("train", "--config", path, "--out", tmp_path / "out")
        assert_one_line_error(result, USAGE, fragments)


# Image folders


def write_png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Return a folder of 8x8 noise PNGs: three per class in train/ and two in test/."""
    root = tmp_path / "images"
    for split, count in (("train", 3), ("test", 2)):
        for label, name in enumerate(("cat", "dog")):
            for index in range(count):
                write_png(root / split / name / f"{index}.png", seed=100 * label + index + (50 if split == "test" else 0))
    return root


def flip_pixel_data_byte(path: Path) -> None:
    """Corrupt a byte in the middle of a PNG's compressed pixel data (its IDAT chunk)."""
    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT") + 4
    length = int.from_bytes(data[start - 8 : start - 4], "big")
    data[start + length // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def imagefolder_args(data_dir: Path | str) -> list[str]:
    return ["train", "--model", "mlp", "--dataset", "imagefolder", "--data-dir", str(data_dir), "--steps", "2", "--batch-size", "2", "--no-progress"]


def test_image_folder_loads(tmp_path: Path, image_folder: Path) -> None:
    result = invoke(*imagefolder_args(image_folder), "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output


def test_image_folder_missing(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = invoke(*imagefolder_args(missing), "--out", tmp_path / "out")
    assert_one_line_error(result, FAILURE, [f"image folder {missing} not found", "check --data-dir", "train/<class>/<image>"])


def test_image_folder_without_data_dir(tmp_path: Path) -> None:
    args = ["train", "--model", "mlp", "--dataset", "imagefolder", "--steps", "2", "--out", str(tmp_path / "out")]
    assert_one_line_error(invoke(*args), FAILURE, ["imagefolder needs --data-dir", "pass a folder with train/<class>/<image>"])


def test_image_folder_is_a_file(tmp_path: Path) -> None:
    file = tmp_path / "images.zip"
    file.write_bytes(b"PK")
    result = invoke(*imagefolder_args(file), "--out", tmp_path / "out")
    assert_one_line_error(result, FAILURE, [f"{file} is not a folder", "pass a folder with train/<class>/<image>"])


def test_image_folder_empty(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke(*imagefolder_args(empty), "--out", tmp_path / "out")
    assert_one_line_error(result, FAILURE, [f"image folder {empty} has no train/ sub-folder", "it needs train/<class>/<image>"])


def test_image_folder_split_without_classes(tmp_path: Path, image_folder: Path) -> None:
    shutil.rmtree(image_folder / "test")
    (image_folder / "test").mkdir()
    result = invoke(*imagefolder_args(image_folder), "--out", tmp_path / "out")
    assert_one_line_error(result, FAILURE, [f"{image_folder / 'test'} has no class folders", "put each class's images in test/<class>/"])


def test_image_folder_class_without_images(tmp_path: Path, image_folder: Path) -> None:
    empty_class = image_folder / "train" / "dog"
    for image in empty_class.iterdir():
        image.unlink()
    (empty_class / "notes.txt").write_text("no images here")
    result = invoke(*imagefolder_args(image_folder), "--out", tmp_path / "out")
    assert_one_line_error(result, FAILURE, [f"class folder {empty_class} has no images", "add images or remove the folder"])


def test_image_folder_class_sets_differ(tmp_path: Path, image_folder: Path) -> None:
    write_png(image_folder / "test" / "eel" / "0.png", seed=7)
    result = invoke(*imagefolder_args(image_folder), "--out", tmp_path / "out")
    assert_one_line_error(result, FAILURE, ["only in test/: eel", "give both splits the same class folders"])


@pytest.mark.parametrize(
    ("corrupt", "fragment"),
    [
        (flip_pixel_data_byte, "the file is corrupt; replace or delete it"),
        (lambda path: path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2]), "the file is corrupt; replace or delete it"),
        (lambda path: path.write_bytes(path.read_bytes()[:20]), "the file is corrupt; replace or delete it"),
        (lambda path: path.write_text("plain text with an image suffix"), "not a known image format; replace or delete the file"),
        (lambda path: path.write_bytes(b""), "is an empty file: replace or delete it"),
    ],
    ids=["flipped-pixel-byte", "truncated-half", "truncated-header", "text", "empty"],
)
def test_image_folder_corrupt_image_named(
    tmp_path: Path, image_folder: Path, corrupt: Callable[[Path], object], fragment: str
) -> None:
    bad = image_folder / "test" / "dog" / "1.png"
    corrupt(bad)
    result = invoke(*imagefolder_args(image_folder), "--out", tmp_path / "out")
    assert_one_line_error(result, FAILURE, [str(bad), fragment])


def test_image_folder_corrupt_jpeg_named(tmp_path: Path, image_folder: Path) -> None:
    bad = image_folder / "train" / "cat" / "photo.jpg"
    Image.new("RGB", (8, 8), (10, 20, 30)).save(bad)
    bad.write_bytes(bad.read_bytes()[:40])
    result = invoke(*imagefolder_args(image_folder), "--out", tmp_path / "out")
    assert_one_line_error(result, FAILURE, [f"cannot decode image {bad}", "replace or delete"])


def test_image_folder_odd_size_named(tmp_path: Path, image_folder: Path) -> None:
    odd = image_folder / "train" / "dog" / "wide.png"
    Image.new("RGB", (12, 8)).save(odd)
    result = invoke(*imagefolder_args(image_folder), "--out", tmp_path / "out")
    assert_one_line_error(result, FAILURE, [f"image {odd} is 8x12 (height x width)", "resize all images to one size"])


def test_debug_variable_shows_data_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWOPHASE_DEBUG", "1")
    result = invoke(*imagefolder_args(tmp_path / "nowhere"), "--out", tmp_path / "out")
    assert result.exit_code == FAILURE
    assert "Traceback" in result.stderr
    assert "DataError" in result.stderr


# Subsets larger than the data


def test_ntk_samples_exceed_training_set(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke("cone", *TINY, "--ntk-samples", "65", "--dts", "4", "--out", out)
    assert_one_line_error(result, USAGE, ["ntk.samples: 65 exceeds the 64 training images of 'synthetic'", "use at most 64"])
    assert not out.exists()


def test_ntk_samples_exceed_training_set_in_chaos(tmp_path: Path) -> None:
    config = write_config(tmp_path, "[ntk]\nsamples = 100\n")
    out = tmp_path / "out"
    result = invoke(*command_args("chaos"), "--config", config, "--metrics", "kernel_distance", "--out", out)
    assert_one_line_error(result, USAGE, ["ntk.samples: 100 exceeds the 64 training images", "use at most 64"])
    assert not out.exists()


def test_ntk_samples_equal_training_set_allowed(tmp_path: Path) -> None:
    result = invoke("cone", *TINY, "--ntk-samples", "64", "--dts", "4", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("source", ["flag", "file"])
def test_test_subset_exceeds_test_set(tmp_path: Path, source: str) -> None:
    extra = ["--test-subset", "33"] if source == "flag" else ["--config", str(write_config(tmp_path, "[chaos]\ntest_subset = 33\n"))]
    out = tmp_path / "out"
    result = invoke(*command_args("chaos"), *extra, "--out", out)
    assert_one_line_error(result, USAGE, ["chaos.test_subset: 33 exceeds the 32 test images of 'synthetic'", "use at most 32, or 0 for all"])
    assert not out.exists()


# cone --from


def test_from_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no-run"
    result = invoke("cone", "--from", missing, *TINY_CONE, "--out", tmp_path / "out")
    assert_one_line_error(result, USAGE, [f"run folder '{missing}' given as --from not found", "pass the --out folder of a `twophase train` run"])


def test_from_incomplete_run(tmp_path: Path, folders: dict[str, Path]) -> None:
    partial = folders["partial"]
    result = invoke("cone", "--from", partial, *TINY_CONE, "--out", tmp_path / "out")
    assert_one_line_error(
        result, USAGE,
        [f"run '{partial}' given as --from is incomplete", "checkpoint(s) [8] of 3 are missing or damaged", f"finish or repair it with `twophase train --config {partial / 'config.toml'} --out {partial}`"],
    )


@pytest.mark.parametrize(
    ("args", "difference"),
    [
        (["--model", "cnn"], "model.name: 'mlp' in the run, 'cnn' here"),
        (["--width", "32"], "model.width: 16 in the run, 32 here"),
        (["--lr", "0.3"], "optimizer.lr: 0.1 in the run, 0.3 here"),
    ],
)
def test_from_run_with_other_config(tmp_path: Path, folders: dict[str, Path], args: list[str], difference: str) -> None:
    result = invoke("cone", "--from", folders["train"], *args, *TINY_CONE, "--out", tmp_path / "out")
    assert_one_line_error(result, USAGE, ["was trained with another config", difference, "leave those options out or pass a matching run"])


def test_from_cone_folder(tmp_path: Path, folders: dict[str, Path]) -> None:
    result = invoke("cone", "--from", folders["cone"], *TINY_CONE, "--out", tmp_path / "out")
    assert_one_line_error(result, USAGE, [f"'{folders['cone']}' given as --from contains a cone run", "pass a `twophase train` run"])


def test_from_chaos_folder(tmp_path: Path, folders: dict[str, Path]) -> None:
    result = invoke("cone", "--from", folders["chaos"], *TINY_CONE, "--out", tmp_path / "out")
    assert_one_line_error(result, USAGE, [f"'{folders['chaos']}' given as --from contains a chaos run", "pass a `twophase train` run"])


def test_from_folder_without_run(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke("cone", "--from", empty, *TINY_CONE, "--out", tmp_path / "out")
    assert_one_line_error(result, USAGE, [f"'{empty}' given as --from is not a `twophase train` run folder", "pass the --out folder of a `twophase train` run"])


def test_from_taus_must_be_checkpoints(tmp_path: Path, folders: dict[str, Path]) -> None:
    result = invoke("cone", "--from", folders["train"], *TINY_CONE, "--taus", "0,2", "--out", tmp_path / "out")
    assert_one_line_error(result, USAGE, ["cone.taus", "step(s) [2] are not among the compared states", "pick taus from the steps 0, 4, 8"])


# Output folders


@pytest.mark.parametrize("command", ["train", "chaos", "cone"])
def test_out_is_a_file(tmp_path: Path, command: str) -> None:
    file = tmp_path / "results.txt"
    file.write_text("keep me")
    result = invoke(*command_args(command), "--out", file)
    assert_one_line_error(result, FAILURE, [f"output path '{file}' is a file", "choose a folder with --out"])
    assert file.read_text() == "keep me"


@pytest.mark.parametrize(
    ("command", "existing"),
    [("chaos", "train"), ("chaos", "cone"), ("cone", "chaos"), ("cone", "train"), ("train", "chaos"), ("train", "cone")],
)
def test_out_holds_other_kind(folders: dict[str, Path], command: str, existing: str) -> None:
    folder = folders[existing]
    info = (folder / "run.json").read_text()
    result = invoke(*command_args(command), "--out", folder)
    assert_one_line_error(result, FAILURE, [f"output folder '{folder}' contains a {existing} run, not a {command} run", "choose another --out"])
    assert (folder / "run.json").read_text() == info


def test_out_holds_other_files(tmp_path: Path) -> None:
    folder = tmp_path / "documents"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    result = invoke(*command_args("train"), "--out", folder)
    assert_one_line_error(result, FAILURE, [f"output folder '{folder}' contains files that are not a twophase run (notes.txt)", "choose an empty or new folder with --out"])


PathMaker = Callable[[Path, pytest.MonkeyPatch], Path]


def below_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "file").write_text("")
    return tmp_path / "file" / "out"


def below_proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # Not even root can create entries in /proc.
    return Path("/proc") / f"twophase-test-{os.getpid()}"


def mkdir_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # Root ignores file modes, so mkdir raises here as it would for another user.
    locked = tmp_path / "locked"
    original = os.mkdir

    def mkdir(path: str | os.PathLike[str], *args: object, **kwargs: object) -> None:
        if Path(path).is_relative_to(locked):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        original(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "mkdir", mkdir)
    return locked / "out"


@pytest.mark.parametrize("unwritable", [below_a_file, below_proc, mkdir_permission_denied])
@pytest.mark.parametrize("command", ["train", "chaos"])
def test_out_not_writable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, unwritable: PathMaker) -> None:
    out = unwritable(tmp_path, monkeypatch)
    result = invoke(*command_args(command), "--out", out)
    assert_one_line_error(result, FAILURE, [f"output folder '{out}' is not writable", "choose another --out"])


@pytest.mark.parametrize("unwritable", [below_a_file, below_proc, mkdir_permission_denied])
def test_out_not_writable_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unwritable: PathMaker) -> None:
    out = unwritable(tmp_path, monkeypatch)
    result = invoke(*command_args("cone"), "--out", out)
    assert_one_line_error(result, FAILURE, [f"'{out}'"])


# Devices


@pytest.mark.parametrize("command", ["train", "chaos", "cone"])
def test_cuda_without_cuda(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "out"
    result = invoke(*command_args(command), "--device", "cuda", "--out", out)
    assert_one_line_error(result, USAGE, ["invalid device 'cuda': CUDA is not available on this machine", "use --device cpu or auto"])
    assert not out.exists()


@pytest.mark.parametrize("device", ["tpu", "cuda:1", "gpu"])
def test_unknown_device(tmp_path: Path, device: str) -> None:
    result = invoke(*command_args("train"), "--device", device, "--out", tmp_path / "out")
    assert_one_line_error(result, USAGE, [f"train.device: '{device}' must be one of auto, cpu, cuda"])
