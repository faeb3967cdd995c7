"""Faults: kills at every stage, a full disk, damaged stores and a diverging parent.

Each kill test runs the experiment in a real subprocess that dies by SIGKILL (or stops by
SIGINT) at a chosen point, then reruns it here and compares every array of the result
with an uninterrupted run.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr.storage._local as zarr_local
from safetensors.torch import load_file
from typer.testing import CliRunner

import twophase.core.state as state_module
from tests.conftest import small_chaos_config, small_cone_config, small_config
from twophase import hookimpl
from twophase.cli.app import app
from twophase.core.chaos import run_chaos
from twophase.core.cone import run_cone
from twophase.core.errors import OutputError, TrainingDivergedError
from twophase.core.plugins import create_hooks
from twophase.core.state import state_file_name
from twophase.core.store import DONE, PENDING
from twophase.core.training import train

ROOT = Path(__file__).resolve().parent.parent
RUNNERS = {
    "train": (train, small_config),
    "chaos": (run_chaos, small_chaos_config),
    "cone": (run_cone, small_cone_config),
}

# The script dies by SIGKILL at the `at`-th event of one kind, or stops by SIGINT for the
# kinds named interrupt-KIND. The kinds: `training` is a training step of any network,
# `checkpoint` a checkpoint's evaluation and save, and `kernel` an eNTK of the cone.
# `store-write` and `state-write` are a file of a finished Zarr store or a saved state,
# killed after half of its bytes were written.
KILL_SCRIPT = """
import os, signal, sys
from pathlib import Path

import zarr.storage._local as zarr_local
import twophase.core.state as state_module
from twophase import hookimpl
from twophase.core.errors import TrainingInterrupted
from twophase.core.measure import KernelSource
from twophase.core.plugins import create_hooks
from tests.test_faults import RUNNERS

command, out, where, at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
signum = signal.SIGINT if where.startswith("interrupt-") else signal.SIGKILL
events = {"count": 0}


def due(kind):
    if where.removeprefix("interrupt-") != kind:
        return False
    events["count"] += 1
    return events["count"] == at


def die_halfway(temporary, data):
    temporary.write_bytes(data[: len(data) // 2])
    os.kill(os.getpid(), signal.SIGKILL)


class Killer:
    @hookimpl
    def on_step(self, run, step, loss):
        if due("training"):
            os.kill(os.getpid(), signum)

    @hookimpl
    def on_checkpoint(self, run, step, state):
        if due("checkpoint"):
            os.kill(os.getpid(), signum)


original_put = zarr_local._put


def put(path, value, *args, **kwargs):
    # Only writes into a finished store count; a store is created under NAME.zarr.tmp.
    if ".zarr.tmp" not in str(path) and due("store-write"):
        die_halfway(path.with_suffix(".killed.partial"), bytes(value.as_buffer_like()))
    return original_put(path, value, *args, **kwargs)


original_save = state_module.save_file


def save(tensors, path, **kwargs):
    if due("state-write"):
        original_save(tensors, path, **kwargs)
        die_halfway(Path(path), Path(path).read_bytes())
    return original_save(tensors, path, **kwargs)


original_kernel = KernelSource.compute


def kernel(self, state):
    if due("kernel"):
        os.kill(os.getpid(), signum)
    return original_kernel(self, state)


zarr_local._put = put
state_module.save_file = save
KernelSource.compute = kernel

run, config = RUNNERS[command]
try:
    run(config(), out, hooks=create_hooks(plugins=[Killer()]))
except (TrainingInterrupted, KeyboardInterrupt) as error:
    print(error, file=sys.stderr)
    sys.exit(130)
"""


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The output folders of uninterrupted runs of the small train, chaos and cone configs."""
    folders = {}
    for command, (run, config) in RUNNERS.items():
        folders[command] = tmp_path_factory.mktemp(f"reference-{command}")
        run(config(), folders[command], hooks=create_hooks())
    return folders


def assert_outputs_equal(command: str, a: Path, b: Path) -> None:
    """Compare every array and attr of two output folders (but `created`), and every saved state."""
    store = "curves.zarr" if command == "train" else "results.zarr"
    with xr.open_zarr(a / store, consolidated=False) as first, xr.open_zarr(b / store, consolidated=False) as second:
        assert set(first.variables) == set(second.variables)
        for name in first.variables:
            x, y = first[name].values, second[name].values
            assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), name
        assert {k: v for k, v in first.attrs.items() if k != "created"} == {k: v for k, v in second.attrs.items() if k != "created"}
    states = sorted(path.relative_to(a) for path in a.rglob("*.safetensors"))
    assert states == sorted(path.relative_to(b) for path in b.rglob("*.safetensors"))
    for path in states:
        first_tensors, second_tensors = load_file(a / path), load_file(b / path)
        assert first_tensors.keys() == second_tensors.keys()
        assert all(np.array_equal(first_tensors[key].numpy(), second_tensors[key].numpy()) for key in first_tensors), path


def run_killed(tmp_path: Path, command: str, where: str, at: int) -> subprocess.CompletedProcess[bytes]:
    script = tmp_path / "kill.py"
    script.write_text(textwrap.dedent(KILL_SCRIPT), encoding="utf-8")
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(script), command, str(tmp_path / "out"), where, str(at)],
        env=environment, capture_output=True, timeout=180, cwd=ROOT,
    )


# test_chaos.py kills the chaos experiment during training and measuring, and stops it by
# SIGINT. These cases add the other commands and the kills in the middle of a write.
KILLS = [
    ("train", "training", 6),
    ("train", "checkpoint", 2),
    ("train", "store-write", 3),
    ("train", "state-write", 2),
    ("train", "interrupt-training", 5),
    ("chaos", "store-write", 14),
    ("chaos", "state-write", 4),
    ("cone", "training", 7),
    ("cone", "kernel", 3),
    ("cone", "store-write", 5),
    ("cone", "interrupt-kernel", 2),
]


@pytest.mark.parametrize(("command", "where", "at"), KILLS)
def test_killed_run_resumes_to_same_output(tmp_path: Path, references: dict[str, Path], command: str, where: str, at: int) -> None:
    killed = run_killed(tmp_path, command, where, at)
    expected = 130 if where.startswith("interrupt") else -signal.SIGKILL
    assert killed.returncode == expected, killed.stderr.decode()[-3000:]
    if where.startswith("interrupt"):
        assert "rerun" in killed.stderr.decode() or "resume" in killed.stderr.decode()
    out = tmp_path / "out"
    run, config = RUNNERS[command]
    run(config(), out, hooks=create_hooks())
    assert_outputs_equal(command, out, references[command])


def test_sigint_on_cli_says_how_to_resume(tmp_path: Path) -> None:
    """Send SIGINT to a real `twophase train` process, which stops and prints how to resume."""
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "twophase", "train", "--model", "mlp", "--dataset", "digits", "--steps", "100000",
        "--checkpoints", "0", "--no-progress", "--out", str(out),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not (out / "checkpoints").is_dir() or not any((out / "checkpoints").iterdir()):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    lines = [line for line in stderr.decode().splitlines() if line.strip()]
    assert process.returncode == 130, stderr.decode()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: interrupted at step")
    assert "rerun the same command to resume" in lines[0]
    assert "Traceback" not in stderr.decode()
    assert list((out / "resume").glob("*.safetensors"))


class _DiskFills:
    """Make the `at`-th write into a finished Zarr store fail with ENOSPC."""

    def __init__(self, at: int) -> None:
        self.at, self.count = at, 0
        self.original = zarr_local._put

    def __call__(self, path: Path, *args: object, **kwargs: object) -> int:
        if ".zarr.tmp" not in str(path):
            self.count += 1
            if self.count == self.at:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return self.original(path, *args, **kwargs)


def _cli(command: str, config_file: Path, out: Path) -> list[str]:
    return [command, "--config", str(config_file), "--out", str(out), "--no-progress"]


@pytest.mark.parametrize(("command", "at"), [("train", 9), ("chaos", 14)])
def test_full_disk_during_store_write(
    tmp_path: Path, references: dict[str, Path], monkeypatch: pytest.MonkeyPatch, command: str, at: int
) -> None:
    config_file = tmp_path / "config.toml"
    config_file.write_text(RUNNERS[command][1]().to_toml(), encoding="utf-8")
    out = tmp_path / "out"
    full = _DiskFills(at)
    monkeypatch.setattr(zarr_local, "_put", full)
    result = CliRunner().invoke(app, _cli(command, config_file, out))
    assert result.exit_code == 1, result.output
    assert "disk is full" in result.output, result.output
    assert "rerun the same command" in result.output
    assert "Traceback" not in result.output
    assert not list(out.rglob("*.partial"))

    store = "curves.zarr" if command == "train" else "results.zarr"
    reference = xr.open_zarr(references[command] / store, consolidated=False).load()
    partial = xr.open_zarr(out / store, consolidated=False).load()
    if command == "chaos":
        done = partial.status.values == DONE
        assert done.any()
        assert (partial.status.values == PENDING).any()
        assert np.array_equal(partial["values"].values[done], reference["values"].values[done])
    else:
        written = np.isfinite(partial.train_loss.values)
        assert 0 < written.sum() < written.size
        assert np.array_equal(partial.train_loss.values[written], reference.train_loss.values[written])

    monkeypatch.setattr(zarr_local, "_put", full.original)
    resumed = CliRunner().invoke(app, _cli(command, config_file, out))
    assert resumed.exit_code == 0, resumed.output
    assert_outputs_equal(command, out, references[command])


def test_full_disk_during_state_save(tmp_path: Path, references: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    config_file = tmp_path / "config.toml"
    config_file.write_text(small_config().to_toml(), encoding="utf-8")
    out = tmp_path / "out"
    calls = {"count": 0}
    original = state_module.save_file

    def fill_disk(tensors: dict[str, object], path: str, **kwargs: object) -> None:
        calls["count"] += 1
        if calls["count"] == 3:
            Path(path).write_bytes(b"\0" * 100)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        original(tensors, path, **kwargs)

    monkeypatch.setattr(state_module, "save_file", fill_disk)
    result = CliRunner().invoke(app, _cli("train", config_file, out))
    assert result.exit_code == 1, result.output
    assert "disk is full" in result.output
    assert not list(out.rglob("*.tmp")), "the partial state file must be removed"
    assert len(list((out / "checkpoints").glob("*.safetensors"))) == 2
    monkeypatch.setattr(state_module, "save_file", original)
    assert CliRunner().invoke(app, _cli("train", config_file, out)).exit_code == 0
    assert_outputs_equal("train", out, references["train"])


def _delete_chunk(store: Path, array: str) -> None:
    next(path for path in (store / array / "c").rglob("*") if path.is_file()).unlink()


def _truncate_chunk(store: Path, array: str) -> None:
    chunk = next(path for path in (store / array / "c").rglob("*") if path.is_file())
    chunk.write_bytes(chunk.read_bytes()[:5])


def _flip_byte(store: Path, array: str) -> None:
    chunk = next(path for path in (store / array / "c").rglob("*") if path.is_file())
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))


def _delete_metadata(store: Path, array: str) -> None:
    (store / array / "zarr.json").unlink()


def _delete_array(store: Path, array: str) -> None:
    shutil.rmtree(store / array)


DAMAGE = {
    "deleted chunk": (_delete_chunk, "values", "lacks 1 of its"),
    "truncated chunk": (_truncate_chunk, "status", "corrupt chunk"),
    "changed byte": (_flip_byte, "test_loss", "corrupt chunk"),
    "deleted metadata": (_delete_metadata, "control", "no metadata file"),
    "deleted array": (_delete_array, "barrier_curve", "array barrier_curve is missing"),
}


@pytest.mark.parametrize("kind", DAMAGE)
def test_damaged_chaos_store_named(tmp_path: Path, references: dict[str, Path], kind: str) -> None:
    damage, array, words = DAMAGE[kind]
    out = tmp_path / "out"
    shutil.copytree(references["chaos"], out)
    damage(out / "results.zarr", array)
    runner = CliRunner()
    for arguments in (["show", str(out)], ["plot", str(out)], _cli("chaos", out / "config.toml", out)):
        result = runner.invoke(app, arguments)
        assert result.exit_code == 1, (arguments, result.output)
        assert f"is damaged: array {array}" in result.output, result.output
        assert words in result.output
        assert "Traceback" not in result.output
    assert not (out / "figures").exists()


def test_damaged_cone_store_is_written_again(tmp_path: Path, references: dict[str, Path]) -> None:
    out = tmp_path / "out"
    shutil.copytree(references["cone"], out)
    _truncate_chunk(out / "results.zarr", "kernel_norm")
    table = CliRunner().invoke(app, ["show", str(out)])
    assert table.exit_code == 1, table.output
    assert "is damaged: array kernel_norm has a corrupt chunk" in table.output

    # The CLI's logging set-up stops propagation, so the test listens on twophase's logger itself.
    records: list[logging.LogRecord] = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("twophase").addHandler(handler)
    try:
        run_cone(small_cone_config(), out, hooks=create_hooks())
    finally:
        logging.getLogger("twophase").removeHandler(handler)
    assert any("array kernel_norm has a corrupt chunk" in record.getMessage() for record in records)
    assert_outputs_equal("cone", out, references["cone"])


def test_damaged_curves_stop_train_resume(tmp_path: Path) -> None:
    out = tmp_path / "out"
    train(small_config(), out, hooks=create_hooks(), stop_at=6)
    _delete_chunk(out / "curves.zarr", "train_loss")
    with pytest.raises(OutputError, match=r"curves store .* is damaged: array train_loss lacks 1 of its 1 chunk"):
        train(small_config(), out, hooks=create_hooks())


class _PoisonParent:
    """Sets the parent's weights to NaN after step `at`, so that its next loss is NaN."""

    def __init__(self, at: int) -> None:
        self.at = at

    @hookimpl
    def on_step(self, run: object, step: int, loss: float) -> None:
        if run.role == "parent" and step == self.at:  # type: ignore[attr-defined]
            for parameter in run.model.parameters():  # type: ignore[attr-defined]
                parameter.data.fill_(float("nan"))


def test_parent_nan_stops_chaos_and_keeps_measured_columns(tmp_path: Path) -> None:
    with pytest.raises(TrainingDivergedError, match=r"loss is nan at step 8; lower the learning rate"):
        run_chaos(small_chaos_config(), tmp_path, hooks=create_hooks(plugins=[_PoisonParent(7)]))
    store = xr.open_zarr(tmp_path / "results.zarr", consolidated=False).load()
    assert store.attrs["parent_diverged"] == "seed 0, step 8"
    t1 = list(store.t1.values)
    assert (store.status.sel(t1=[t for t in t1 if t <= 6]).values[store.t0.values[:, None] <= np.array([t for t in t1 if t <= 6])] == DONE).all()
    assert (store.status.sel(t1=[12, 24]).values == PENDING).all()
    table = CliRunner().invoke(app, ["show", str(tmp_path)])
    assert table.exit_code == 0, table.output
    assert "became NaN or infinite (seed 0, step 8)" in table.output


@pytest.mark.parametrize("command", ["train", "chaos", "cone"])
def test_parent_nan_on_cli_names_step_and_fix(tmp_path: Path, command: str) -> None:
    config_file = tmp_path / "config.toml"
    config_file.write_text(RUNNERS[command][1](optimizer__lr=1e6).to_toml(), encoding="utf-8")
    result = CliRunner().invoke(app, _cli(command, config_file, tmp_path / "out"))
    assert result.exit_code == 1, result.output
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1, result.output
    assert "at step" in error[0]
    assert "lower the learning rate" in error[0]


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_damaged_checkpoint_written_again(tmp_path: Path, references: dict[str, Path], damage: str) -> None:
    out = tmp_path / "out"
    shutil.copytree(references["train"], out)
    checkpoint = out / "checkpoints" / state_file_name(4)
    if damage == "deleted":
        checkpoint.unlink()
    else:
        checkpoint.write_bytes(checkpoint.read_bytes()[:100])

    config_file = tmp_path / "config.toml"
    config_file.write_text(small_config().to_toml(), encoding="utf-8")
    result = CliRunner().invoke(app, _cli("train", config_file, out))
    assert result.exit_code == 0, result.output
    assert "checkpoint(s) at step(s) 4 are missing or damaged; training again from step 0" in result.output
    assert_outputs_equal("train", out, references["train"])


def test_from_run_with_damaged_curves_rejected(tmp_path: Path, references: dict[str, Path]) -> None:
    run = tmp_path / "run"
    shutil.copytree(references["train"], run)
    _delete_chunk(run / "curves.zarr", "train_loss")
    result = CliRunner().invoke(app, ["cone", "--from", str(run), "--ntk-samples", "8", "--dts", "4", "--out", str(tmp_path / "cone")])
    assert result.exit_code == 1, result.output
    assert "curves store of the run" in result.output
    assert "array train_loss lacks 1 of its 1 chunk file(s)" in result.output
    assert "--overwrite" in result.output


def test_show_names_missing_store_metadata(tmp_path: Path, references: dict[str, Path]) -> None:
    out = tmp_path / "out"
    shutil.copytree(references["chaos"], out)
    (out / "results.zarr" / "zarr.json").unlink()
    for command in ("show", "plot"):
        result = CliRunner().invoke(app, [command, str(out)])
        assert result.exit_code == 1, result.output
        assert "is damaged: its metadata file" in result.output
