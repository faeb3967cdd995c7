"""Every recipe of docs/results.md runs on real stores: the demo's and a replicated chaos run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from twophase.cli.app import app

PAGE = Path(__file__).resolve().parent.parent / "docs" / "results.md"


def recipes() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), re.DOTALL)


def seeds_command() -> list[str]:
    """Return the arguments of the page's `twophase chaos ... --seeds` command."""
    text = PAGE.read_text(encoding="utf-8")
    match = re.search(r"^    (twophase chaos .*?--out runs/seeds)$", text, re.MULTILINE | re.DOTALL)
    assert match is not None
    return shlex.split(match.group(1).replace("\\\n", " "))[1:]


@pytest.fixture(scope="module")
def seeds_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("seeds")
    arguments = [str(out) if argument == "runs/seeds" else argument for argument in seeds_command()]
    result = CliRunner().invoke(app, [*arguments, "--no-progress"])
    assert result.exit_code == 0, result.output
    return out


def test_page_has_recipes() -> None:
    assert len(recipes()) >= 8


def test_recipes_run(demo_folder: Path, seeds_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    for recipe in recipes():
        code = (
            recipe.replace('"runs/demo/chaos"', repr(str(demo_folder / "chaos")))
            .replace('"runs/demo/cone"', repr(str(demo_folder / "cone")))
            .replace('"runs/seeds"', repr(str(seeds_folder)))
        )
        exec(compile(code, str(PAGE), "exec"), namespace)  # noqa: S102 - the page's own recipes
    assert (tmp_path / "loss-barrier.png").stat().st_size > 10_000
    assert namespace["offsets"].values.tolist() == namespace["from_matrix"]
    assert list(namespace["summary"].columns) == ["mean", "std"]
