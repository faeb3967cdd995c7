"""The plugin manager and its typed facade.

`create_hooks()` builds the manager in three steps: add the hook specifications,
register the built-in plugins, load the `twophase` entry-point group. The environment
variable TWOPHASE_BLOCK_PLUGINS, a comma-separated list of plugin names, keeps named
plugins out; `twophase plugins` lists the names.
"""

from __future__ import annotations

import importlib
import logging
import os
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy

from twophase.core import hookspecs
from twophase.core.errors import PluginError, TwophaseError, unknown_name
from twophase.core.specs import DatasetSpec, MetricSpec, ModelSpec, PerturbationSpec

if TYPE_CHECKING:
    import torch

    from twophase.core.run import Run
    from twophase.core.state import TrainingState

logger = logging.getLogger(__name__)

BLOCK_ENVIRONMENT_VARIABLE = "TWOPHASE_BLOCK_PLUGINS"
ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME
BUILTIN_PLUGINS = ("twophase.plugins.models", "twophase.plugins.datasets")


def blocked_plugin_names() -> list[str]:
    """Return the plugin names listed in TWOPHASE_BLOCK_PLUGINS."""
    raw = os.environ.get(BLOCK_ENVIRONMENT_VARIABLE, "")
    return [name.strip() for name in raw.split(",") if name.strip()]


def create_plugin_manager(*, load_entry_points: bool = True, plugins: Iterable[object] = ()) -> pluggy.PluginManager:
    """Build a validated plugin manager with the built-ins, entry points and `plugins`."""
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    for name in blocked_plugin_names():
        manager.set_blocked(name)
        logger.info("plugin %s blocked by %s", name, BLOCK_ENVIRONMENT_VARIABLE)

    try:
        for module_name in BUILTIN_PLUGINS:
            if not manager.is_blocked(module_name):
                manager.register(importlib.import_module(module_name), name=module_name)
        if load_entry_points:
            loaded = manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
            logger.debug("loaded %d plugin(s) from entry points", loaded)
        for plugin in plugins:
            manager.register(plugin)
        manager.check_pending()
    except pluggy.PluginValidationError as error:
        raise PluginError(f"plugin {error.plugin!r} is invalid: {error}") from None
    return manager


@dataclass(frozen=True)
class Registered:
    """A spec together with the name of the plugin that registered it."""

    spec: Any
    plugin: str


@dataclass
class Registry:
    """Every registered model, data set, perturbation and metric, by name."""

    models: dict[str, Registered] = field(default_factory=dict)
    datasets: dict[str, Registered] = field(default_factory=dict)
    perturbations: dict[str, Registered] = field(default_factory=dict)
    metrics: dict[str, Registered] = field(default_factory=dict)

    def model(self, name: str) -> ModelSpec:
        """Return the spec that builds `name`; a namespace spec owns `prefix:variant`."""
        prefix, colon, variant = name.partition(":")
        key = prefix if colon else name
        entry = self.models.get(key)
        if entry is None or entry.spec.namespace != bool(colon) or (colon and not variant):
            plain = [n for n, e in self.models.items() if not e.spec.namespace]
            spaced = [f"{n}:NAME" for n, e in self.models.items() if e.spec.namespace]
            raise unknown_name("model", name, plain + spaced)
        return entry.spec

    def dataset(self, name: str) -> DatasetSpec:
        return self._lookup(self.datasets, "data set", name)

    def perturbation(self, name: str) -> PerturbationSpec:
        return self._lookup(self.perturbations, "perturbation", name)

    def metric(self, name: str) -> MetricSpec:
        return self._lookup(self.metrics, "metric", name)

    @staticmethod
    def _lookup(table: dict[str, Registered], kind: str, name: str) -> Any:
        entry = table.get(name)
        if entry is None:
            raise unknown_name(kind, name, table)
        return entry.spec


class Hooks:
    """Typed calls into the plugin manager, with keyword arguments only.

    An exception raised inside a plugin's hook becomes a PluginError that names the
    plugin and the hook, so that a failure in a third-party plugin is not mistaken for
    a failure of twophase.
    """

    def __init__(self, manager: pluggy.PluginManager) -> None:
        self.manager = manager
        self._registry: Registry | None = None

    @property
    def registry(self) -> Registry:
        """The registry, collected from the registration hooks on first use."""
        if self._registry is None:
            self._registry = self._collect_registry()
        return self._registry

    def on_run_start(self, *, run: Run) -> None:
        self._call("on_run_start", f"run {run.name}", run=run)

    def on_step(self, *, run: Run, step: int, loss: float) -> None:
        self._call("on_step", f"step {step} of run {run.name}", run=run, step=step, loss=loss)

    def on_checkpoint(self, *, run: Run, step: int, state: TrainingState) -> None:
        self._call("on_checkpoint", f"checkpoint {step} of run {run.name}", run=run, step=step, state=state)

    def on_run_end(self, *, run: Run) -> None:
        self._call("on_run_end", f"run {run.name}", run=run)

    def perturb(self, *, state: TrainingState, spec: Any, generator: torch.Generator) -> Any:
        return self._call("perturb", f"step {state.step}", state=state, spec=spec, generator=generator)

    def measure(self, *, a: TrainingState, b: TrainingState, context: Any) -> list[dict[str, float]]:
        return self._call("measure", f"steps {a.step} and {b.step}", a=a, b=b, context=context)

    def _call(self, hook_name: str, where: str, **kwargs: Any) -> Any:
        caller = getattr(self.manager.hook, hook_name)
        try:
            return caller(**kwargs)
        except TwophaseError:
            raise
        except Exception as error:
            plugin = _failing_plugin(caller, error)
            raise PluginError(
                f"plugin {plugin!r} failed in hook {hook_name} at {where}: {type(error).__name__}: {error}"
            ) from error

    def _collect_registry(self) -> Registry:
        registry = Registry()
        tables: list[tuple[str, str, dict[str, Registered], type]] = [
            ("register_models", "model", registry.models, ModelSpec),
            ("register_datasets", "data set", registry.datasets, DatasetSpec),
            ("register_perturbations", "perturbation", registry.perturbations, PerturbationSpec),
            ("register_metrics", "metric", registry.metrics, MetricSpec),
        ]
        for hook_name, kind, table, spec_type in tables:
            for impl in getattr(self.manager.hook, hook_name).get_hookimpls():
                for spec in _call_registration(impl, hook_name):
                    if not isinstance(spec, spec_type):
                        raise PluginError(
                            f"plugin {impl.plugin_name!r} returned {spec!r} from {hook_name}; "
                            f"expected {spec_type.__name__} objects"
                        )
                    owner = table.get(spec.name)
                    if owner is not None:
                        raise PluginError(
                            f"{kind} {spec.name!r} is registered by both {owner.plugin!r} and "
                            f"{impl.plugin_name!r}; block one of them with {BLOCK_ENVIRONMENT_VARIABLE}"
                        )
                    table[spec.name] = Registered(spec, impl.plugin_name)
        return registry


def create_hooks(*, load_entry_points: bool = True, plugins: Iterable[object] = ()) -> Hooks:
    """Build the plugin manager and wrap it in the typed facade."""
    return Hooks(create_plugin_manager(load_entry_points=load_entry_points, plugins=plugins))


def _call_registration(impl: pluggy.HookImpl, hook_name: str) -> list[Any]:
    try:
        result = impl.function()
    except Exception as error:
        raise PluginError(
            f"plugin {impl.plugin_name!r} failed in hook {hook_name}: {type(error).__name__}: {error}"
        ) from error
    return list(result or [])


def _failing_plugin(caller: pluggy.HookCaller, error: BaseException) -> str:
    """Find the plugin whose hook implementation raised, from the traceback's code objects."""
    codes: dict[types.CodeType, str] = {}
    for impl in caller.get_hookimpls():
        function: Callable[..., Any] = impl.function
        code = getattr(function, "__code__", None)
        if code is not None:
            codes[code] = impl.plugin_name
    traceback = error.__traceback__
    while traceback is not None:
        owner = codes.get(traceback.tb_frame.f_code)
        if owner is not None:
            return owner
        traceback = traceback.tb_next
    return "unknown"
