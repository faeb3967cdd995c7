"""The plugin manager: built-ins through public hooks, blocking, validation, errors."""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from torch import nn
from typer.testing import CliRunner

from tests.conftest import small_chaos_config, small_config
from twophase import hookimpl
from twophase.cli.app import app
from twophase.core import hookspecs
from twophase.core.chaos import run_chaos
from twophase.core.errors import PluginError, UnknownNameError
from twophase.core.plugins import BUILTIN_PLUGINS, create_hooks
from twophase.core.specs import MetricSpec, ModelRequest, ModelSpec
from twophase.core.state import TrainingState
from twophase.core.store import DONE, PENDING
from twophase.core.training import train

DESIGN_HOOKS = {
    "on_run_start", "on_step", "on_checkpoint", "on_run_end", "perturb", "measure",
    "register_models", "register_datasets", "register_perturbations", "register_metrics",
}


def hookspec_functions() -> dict[str, object]:
    return {
        name: function
        for name, function in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(function, "twophase_spec")
    }


def test_every_design_hook_has_a_spec() -> None:
    assert set(hookspec_functions()) == DESIGN_HOOKS


@pytest.mark.parametrize("name", sorted(DESIGN_HOOKS))
def test_hookspec_has_docstring(name: str) -> None:
    function = hookspec_functions()[name]
    doc = inspect.getdoc(function) or ""
    assert len(doc.splitlines()) >= 3
    for argument in inspect.signature(function).parameters:
        assert f"{argument}:" in doc, argument


def test_builtins_register_through_hooks() -> None:
    hooks = create_hooks(load_entry_points=False)
    plugin_names = set()
    for table in (hooks.registry.models, hooks.registry.datasets, hooks.registry.perturbations, hooks.registry.metrics):
        plugin_names |= {entry.plugin for entry in table.values()}
    assert plugin_names == set(BUILTIN_PLUGINS)
    assert all(hooks.manager.get_plugin(name) is not None for name in BUILTIN_PLUGINS)


def test_block_variable_removes_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWOPHASE_BLOCK_PLUGINS", "twophase.plugins.models")
    hooks = create_hooks()
    assert hooks.registry.models == {}
    assert "digits" in hooks.registry.datasets
    with pytest.raises(UnknownNameError, match="unknown model 'resnet20'"):
        hooks.registry.model("resnet20")


class TinyModelPlugin:
    @hookimpl
    def register_models(self) -> list[ModelSpec]:
        def build(request: ModelRequest) -> nn.Module:
            return nn.Sequential(nn.Flatten(), nn.Linear(request.in_channels * 64, request.num_classes))

        return [ModelSpec("tiny-linear", build, "a linear model on 8x8 images")]


def test_third_party_model_trains(tmp_path: Path) -> None:
    hooks = create_hooks(plugins=[TinyModelPlugin()])
    result = train(small_config(model__name="tiny-linear", model__width=None, model__options={}), tmp_path, hooks=hooks)
    assert result.complete


def test_duplicate_name_names_both_plugins() -> None:
    class Shadow:
        @hookimpl
        def register_models(self) -> list[ModelSpec]:
            return [ModelSpec("resnet20", lambda request: nn.Identity(), "a second resnet20")]

    hooks = create_hooks(plugins=[Shadow()])
    with pytest.raises(PluginError, match=r"model 'resnet20' is registered by both .*twophase.plugins.models"):
        hooks.registry  # noqa: B018


def test_unknown_hook_rejected() -> None:
    class Misspelled:
        @hookimpl
        def on_stepp(self, run: object) -> None:
            pass

    with pytest.raises(PluginError, match="on_stepp"):
        create_hooks(plugins=[Misspelled()])


def test_wrong_hook_arguments_rejected() -> None:
    class WrongArguments:
        @hookimpl
        def on_step(self, run: object, steps: int) -> None:
            pass

    with pytest.raises(PluginError, match="steps"):
        create_hooks(plugins=[WrongArguments()])


def test_failing_hook_names_plugin_and_step(tmp_path: Path) -> None:
    class Faulty:
        @hookimpl
        def on_step(self, run: object, step: int, loss: float) -> None:
            if step == 3:
                raise ValueError("broken metric")

    hooks = create_hooks(plugins=[Faulty()])
    with pytest.raises(PluginError, match=r"plugin '.*' failed in hook on_step at step 3 of run \S+: ValueError: broken metric"):
        train(small_config(), tmp_path, hooks=hooks)


def test_hooks_receive_every_step_and_checkpoint(tmp_path: Path) -> None:
    class Recorder:
        def __init__(self) -> None:
            self.events: list[tuple[str, int]] = []

        @hookimpl
        def on_run_start(self, run: object) -> None:
            self.events.append(("start", run.step))  # type: ignore[attr-defined]

        @hookimpl
        def on_step(self, run: object, step: int, loss: float) -> None:
            self.events.append(("step", step))

        @hookimpl
        def on_checkpoint(self, run: object, step: int, state: object) -> None:
            self.events.append(("checkpoint", step))

        @hookimpl
        def on_run_end(self, run: object) -> None:
            self.events.append(("end", run.step))  # type: ignore[attr-defined]

    recorder = Recorder()
    train(small_config(train__checkpoints="0,6"), tmp_path, hooks=create_hooks(plugins=[recorder]))
    assert recorder.events[:2] == [("start", 0), ("checkpoint", 0)]
    assert [step for kind, step in recorder.events if kind == "step"] == list(range(1, 13))
    assert [step for kind, step in recorder.events if kind == "checkpoint"] == [0, 6, 12]
    assert recorder.events[-1] == ("end", 12)


def test_unknown_model_lists_close_matches() -> None:
    with pytest.raises(UnknownNameError, match="did you mean resnet20"):
        create_hooks().registry.model("resnet2")


def test_unknown_dataset_lists_close_matches() -> None:
    with pytest.raises(UnknownNameError, match="did you mean cifar10"):
        create_hooks().registry.dataset("cifar11")


PLUGIN_MODULE = '''
from torch import nn

from twophase import hookimpl
from twophase.core.specs import ModelSpec


@hookimpl
def register_models():
    return [ModelSpec("entry-linear", lambda request: nn.Flatten(), "registered through an entry point")]
'''


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Install a one-module plugin package on sys.path with a `twophase` entry point."""
    (tmp_path / "tp_entry_plugin.py").write_text(PLUGIN_MODULE, encoding="utf-8")
    dist_info = tmp_path / "tp_entry_plugin-1.2.3.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: tp-entry-plugin\nVersion: 1.2.3\n", encoding="utf-8")
    (dist_info / "entry_points.txt").write_text("[twophase]\nentry-linear = tp_entry_plugin\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield "entry-linear"
    sys.modules.pop("tp_entry_plugin", None)


def test_entry_point_plugin_loads(installed_plugin: str) -> None:
    hooks = create_hooks()
    assert hooks.registry.models["entry-linear"].plugin == installed_plugin


def test_entry_point_plugin_listed(installed_plugin: str) -> None:
    result = CliRunner().invoke(app, ["plugins"])
    assert result.exit_code == 0, result.output
    assert "entry-linear" in result.output
    assert "tp-entry-plugin 1.2.3" in result.output


def test_entry_point_plugin_blocked(installed_plugin: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWOPHASE_BLOCK_PLUGINS", installed_plugin)
    assert "entry-linear" not in create_hooks().registry.models


def test_plugin_import_failure_names_plugin(installed_plugin: str, tmp_path: Path) -> None:
    (tmp_path / "tp_entry_plugin.py").write_text("import module_that_does_not_exist\n", encoding="utf-8")
    with pytest.raises(PluginError, match=r"plugin 'entry-linear' .* failed to import: ModuleNotFoundError.*TWOPHASE_BLOCK_PLUGINS=entry-linear"):
        create_hooks()


def test_registration_must_return_list() -> None:
    class Bare:
        @hookimpl
        def register_models(self) -> ModelSpec:
            return ModelSpec("bare", lambda request: nn.Identity(), "not in a list")

    with pytest.raises(PluginError, match="returned ModelSpec from register_models; expected a list"):
        create_hooks(plugins=[Bare()]).registry  # noqa: B018


def test_invalid_plugin_message_is_one_line() -> None:
    class WrongArguments:
        @hookimpl
        def on_step(self, run: object, steps: int) -> None:
            pass

    with pytest.raises(PluginError) as raised:
        create_hooks(plugins=[WrongArguments()])
    assert "\n" not in str(raised.value)
    assert "<" not in str(raised.value)


def test_undeclared_metric_names_plugin(tmp_path: Path) -> None:
    class Impostor:
        @hookimpl
        def measure(self, a: object, b: object, context: object) -> dict[str, float]:
            return {"param_cosine": 0.5}

    hooks = create_hooks(plugins=[Impostor()])
    with pytest.raises(PluginError, match=r"returned metric 'param_cosine', which plugin 'twophase.plugins.metrics' registers"):
        run_chaos(small_chaos_config(chaos__t0="0", chaos__t1="0"), tmp_path, hooks=hooks)


def test_failing_measure_names_plugin(tmp_path: Path) -> None:
    class Broken:
        @hookimpl
        def measure(self, a: object, b: object) -> dict[str, float]:
            raise ZeroDivisionError("no data")

    hooks = create_hooks(plugins=[Broken()])
    with pytest.raises(PluginError, match=r"failed in hook measure between parent at step 0 and twin-t0-0 at step 0: ZeroDivisionError"):
        run_chaos(small_chaos_config(chaos__t0="0", chaos__t1="0"), tmp_path, hooks=hooks)


def test_failing_plugin_keeps_finished_columns(tmp_path: Path) -> None:
    class LateFailure:
        @hookimpl
        def register_metrics(self) -> list[MetricSpec]:
            return [MetricSpec("fragile", "a metric that fails late", "1", ("chaos",))]

        @hookimpl
        def measure(self, a: TrainingState, b: TrainingState, context: object) -> dict[str, float]:
            if b.step >= 12:
                raise RuntimeError("out of luck")
            return {"fragile": 1.0}

    hooks = create_hooks(plugins=[LateFailure()])
    config = small_chaos_config(chaos__metrics=["param_cosine", "fragile"])
    with pytest.raises(PluginError, match=r"failed in hook measure between parent at step 12 and .* at step 12: RuntimeError"):
        run_chaos(config, tmp_path, hooks=hooks)
    with xr.open_zarr(tmp_path / "results.zarr", consolidated=False) as store:
        assert (store.status.sel(t1=[0, 2, 6]).values[store.t0.values[:, None] <= np.array([0, 2, 6])] == DONE).all()
        assert (store.status.sel(t1=12).values == PENDING).all()
        assert store["values"].sel(metric="fragile", t0=0, t1=6).item() == 1.0
