"""Training progress: a rich bar on terminals, periodic log lines elsewhere."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from tests.conftest import small_config
from tests.test_training import SMALL_RUN_ARGS
from twophase.cli import progress
from twophase.cli.app import app
from twophase.cli.progress import ProgressReporter
from twophase.core.plugins import create_hooks
from twophase.core.training import train


def test_bar_shows_steps_loss_and_speed(tmp_path: Path) -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=160)
    reporter = ProgressReporter(console, bar=True)
    with reporter:
        train(small_config(), tmp_path, hooks=create_hooks(plugins=[reporter]))
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert "12/12" in output
    assert "loss" in output
    assert "steps/s" in output


def test_no_bar_without_terminal() -> None:
    console = Console(file=io.StringIO(), force_terminal=False)
    with ProgressReporter(console, bar=True) as reporter:
        assert reporter.progress is None


def test_plain_output_logs_status_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "LOG_INTERVAL_SECONDS", 0.0)
    result = CliRunner().invoke(app, ["train", *SMALL_RUN_ARGS, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"{tmp_path.name}: step 12/12, loss" in result.output
    assert "steps/s" in result.output
    assert "left" in result.output
