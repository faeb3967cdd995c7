"""Docs, README and example configs stay true to the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from twophase.core.chaos import ChaosConfig
from twophase.core.cone import ConeConfig
from twophase.core.config import RunConfig, load_config
from twophase.core.plugins import create_plugin_manager

ROOT = Path(__file__).resolve().parent.parent


def test_plugins_page_describes_every_hook() -> None:
    page = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    manager = create_plugin_manager(load_entry_points=False)
    for name, caller in vars(manager.hook).items():
        if caller.spec is None:
            continue
        heading = f"### {name}({', '.join(caller.spec.argnames)})"
        assert heading in page, heading


def test_readme_test_command_matches_ci() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    command = re.search(r"^\s+(python3 -m venv .*pip install -e '\.\[test\]'.*)$", readme, re.MULTILINE)
    assert command is not None
    for part in command.group(1).split(" && ")[2:]:
        assert part in ci, part


@pytest.mark.parametrize("path", sorted((ROOT / "examples" / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_example_config_loads(path: Path) -> None:
    kinds = {"chaos": ChaosConfig, "cone": ConeConfig}
    config = load_config(path, kind=kinds.get(path.stem.rsplit("-", 1)[-1], RunConfig))
    text = path.read_text(encoding="utf-8")
    assert f"--config examples/configs/{path.name}" in text
    assert f'name = "{config.model.name}"' in text
