"""Security: saved states are never unpickled, and config files cannot choose where to write."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import twophase
from tests.conftest import small_cone_config, small_config, write_image_folder
from twophase.cli.app import app
from twophase.core.plugins import create_hooks
from twophase.core.state import state_file_name
from twophase.core.training import train

PACKAGE = Path(twophase.__file__).resolve().parent


class _Payload:
    """Unpickling this object creates the file `marker`: the test's proof of code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.marker,))


def _plant(path: Path, marker: Path) -> None:
    """Replace a state file by a torch.save file whose unpickling runs code."""
    torch.save({"model": _Payload(marker)}, path)


def _invoke(*arguments: object) -> object:
    return CliRunner().invoke(app, [str(argument) for argument in arguments])


def test_planted_checkpoint_is_not_unpickled(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(small_config(), run, hooks=create_hooks())
    marker = tmp_path / "code-ran"
    planted = run / "checkpoints" / state_file_name(4)
    assert planted.is_file()
    _plant(planted, marker)
    config = tmp_path / "cone.toml"
    config.write_text(small_cone_config(train__checkpoints="every:4", cone__dts=[]).to_toml(), encoding="utf-8")
    result = _invoke("cone", "--config", config, "--from", run, "--out", tmp_path / "cone", "--no-progress")
    assert result.exit_code == 2, result.output
    assert "checkpoint(s) [4] of 4 are missing or damaged" in result.output
    assert not marker.exists()


def test_planted_resume_state_is_not_unpickled(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(small_config(), out, hooks=create_hooks(), stop_at=6)
    (state,) = (out / "resume").glob("*.safetensors")
    marker = tmp_path / "code-ran"
    _plant(state, marker)
    config = tmp_path / "config.toml"
    config.write_text(small_config().to_toml(), encoding="utf-8")
    result = _invoke("train", "--config", config, "--out", out, "--no-progress")
    assert not marker.exists()
    # The planted file is skipped as damaged, and training resumes from the checkpoint before it.
    assert result.exit_code == 0, result.output
    assert "skipping damaged state at step 6" in result.output


UNPICKLING = re.compile(r"^\s*(import pickle|from pickle import)|pickle\.loads?\(|allow_pickle\s*=\s*True|torch\.load\((?![^)]*weights_only=True)", re.MULTILINE)


def test_package_source_never_unpickles() -> None:
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 50
    offenders = [str(path.relative_to(PACKAGE)) for path in sources if UNPICKLING.search(path.read_text(encoding="utf-8"))]
    assert offenders == []
    assert UNPICKLING.search("state = torch.load(path)")
    assert not UNPICKLING.search("state = torch.load(path, weights_only=True)")


@pytest.mark.parametrize(
    ("text", "key", "fix"),
    [
        ('[data]\ncache_dir = "/tmp/elsewhere"\n', "data.cache_dir", "--cache-dir or set TWOPHASE_CACHE_DIR"),
        ("[data]\ndownload = true\n", "data.download", "--download"),
    ],
)
def test_config_file_cannot_choose_write_location(tmp_path: Path, text: str, key: str, fix: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(text, encoding="utf-8")
    result = _invoke("train", "--config", config, "--model", "mlp", "--steps", "2", "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert f"{key} = " in result.output
    assert "is rejected" in result.output
    assert fix in result.output
    assert not (tmp_path / "out").exists()
    assert not Path("/tmp/elsewhere").exists()


def _snapshot(root: Path, skip: tuple[Path, ...]) -> dict[str, tuple[int, int]]:
    return {
        str(path): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in root.rglob("*")
        if path.is_file() and not any(path.is_relative_to(folder) for folder in skip)
    }


def test_runs_write_only_into_out_and_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Data folder, config file and a --from run stay untouched; the cache is the only other writer."""
    data = write_image_folder(tmp_path / "data", ["cat", "dog"], counts=(12, 4), size=8)
    cache = tmp_path / "cache"
    monkeypatch.setenv("TWOPHASE_CACHE_DIR", str(cache))
    config = tmp_path / "config.toml"
    config.write_text(
        f'[model]\nname = "mlp"\n[data]\nname = "imagefolder"\ndata_dir = "{data}"\n'
        '[train]\nlength = 4\nbatch_size = 8\ncheckpoints = "0,2,4"\n',
        encoding="utf-8",
    )
    run, cone = tmp_path / "run", tmp_path / "cone"
    assert _invoke("train", "--config", config, "--out", run, "--no-progress").exit_code == 0
    before = _snapshot(tmp_path, skip=(cone, cache))
    result = _invoke("cone", "--from", run, "--ntk-samples", "6", "--dts", "2", "--out", cone, "--no-progress")
    assert result.exit_code == 0, result.output
    assert _snapshot(tmp_path, skip=(cone, cache)) == before
    assert list((cache / "imagefolder").glob("*.safetensors"))


def test_saved_config_leaves_out_cache_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    arguments = ["--model", "mlp", "--steps", "2", "--checkpoints", "0,2", "--cache-dir", tmp_path / "cache", "--out", out, "--no-progress"]
    assert _invoke("train", *arguments).exit_code == 0
    saved = (out / "config.toml").read_text(encoding="utf-8")
    assert "cache_dir" not in saved
    assert "download = true" not in saved
    rerun = _invoke("train", "--config", out / "config.toml", "--out", out, "--no-progress")
    assert rerun.exit_code == 0, rerun.output
