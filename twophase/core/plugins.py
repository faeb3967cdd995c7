"""The plugin manager and its typed facade.

`create_hooks()` builds the manager in three steps: add the hook specifications,
register the built-in plugins, load the `twophase` entry-point group. The environment
variable TWOPHASE_BLOCK_PLUGINS, a comma-separated list of plugin names, keeps named
plugins out; `twophase plugins` lists the names.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import re
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy

from twophase.core import hookspecs
from twophase.core.errors import PluginError, TwophaseError, UsageError, unknown_name
from twophase.core.specs import DatasetSpec, MetricSpec, ModelSpec, PerturbationSpec

if TYPE_CHECKING:
    import torch

    from twophase.core.run import Run
    from twophase.core.state import TrainingState

logger = logging.getLogger(__name__)

BLOCK_ENVIRONMENT_VARIABLE = "TWOPHASE_BLOCK_PLUGINS"
ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME
BUILTIN_PLUGINS = (
    "twophase.plugins.models",
    "twophase.plugins.datasets",
    "twophase.plugins.perturbations",
    "twophase.plugins.metrics",
    "twophase.plugins.ntk",
)


def blocked_plugin_names() -> list[str]:
    """Return the plugin names listed in TWOPHASE_BLOCK_PLUGINS."""
    raw = os.environ.get(BLOCK_ENVIRONMENT_VARIABLE, "")
    return [name.strip() for name in raw.split(",") if name.strip()]


def create_hooks(*, load_entry_points: bool = True, plugins: Iterable[object] = ()) -> Hooks:
    """Build the validated plugin manager, in its typed facade.

    Registers the built-ins, then the `twophase` entry points of installed packages, then
    `plugins` (objects or modules that are not installed, as in tests and notebooks).
    """
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    for name in blocked_plugin_names():
        manager.set_blocked(name)
        logger.info("plugin %s blocked by %s", name, BLOCK_ENVIRONMENT_VARIABLE)

    versions: dict[str, str] = {}
    for module_name in BUILTIN_PLUGINS:
        if not manager.is_blocked(module_name):
            _register(manager, importlib.import_module(module_name), module_name)
    if load_entry_points:
        versions = _load_entry_points(manager)
    for plugin in plugins:
        if manager.is_registered(plugin):
            logger.debug("plugin %r is already registered through its entry point", plugin)
            continue
        _register(manager, plugin, None)
    try:
        manager.check_pending()
    except pluggy.PluginValidationError as error:
        raise _invalid_plugin(manager, error) from None
    return Hooks(manager, versions)


def create_plugin_manager(*, load_entry_points: bool = True, plugins: Iterable[object] = ()) -> pluggy.PluginManager:
    """Build the validated plugin manager without the facade."""
    return create_hooks(load_entry_points=load_entry_points, plugins=plugins).manager


def installed_plugin_names() -> list[str]:
    """Return the names of the `twophase` entry points of installed packages."""
    return [entry_point.name for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)]


def _load_entry_points(manager: pluggy.PluginManager) -> dict[str, str]:
    """Import and register every `twophase` entry point; return each plugin's distribution and version.

    Each entry point is imported on its own, so that a plugin that fails to import is
    named in the error together with the way to block it.
    """
    versions = {}
    for distribution in importlib.metadata.distributions():
        for entry_point in distribution.entry_points:
            if entry_point.group != ENTRY_POINT_GROUP:
                continue
            name = entry_point.name
            if manager.is_blocked(name) or manager.get_plugin(name) is not None:
                continue
            try:
                plugin = entry_point.load()
            except Exception as error:
                raise PluginError(
                    f"plugin {name!r} ({entry_point.value}) failed to import: {type(error).__name__}: {error}; "
                    f"fix or uninstall it, or block it with {BLOCK_ENVIRONMENT_VARIABLE}={name}"
                ) from error
            _register(manager, plugin, name)
            versions[name] = f"{distribution.metadata['Name']} {distribution.version}"
    logger.debug("loaded %d plugin(s) from entry points", len(versions))
    return versions


def _register(manager: pluggy.PluginManager, plugin: object, name: str | None) -> None:
    try:
        manager.register(plugin, name=name)
    except pluggy.PluginValidationError as error:
        raise _invalid_plugin(manager, error, name) from None


def _invalid_plugin(manager: pluggy.PluginManager, error: pluggy.PluginValidationError, name: str | None = None) -> PluginError:
    """Turn pluggy's multi-line validation message into one line that names the plugin."""
    name = name or manager.get_name(error.plugin) or getattr(error.plugin, "__name__", type(error.plugin).__name__)
    text = re.sub(r" in plugin <.*?>", "", str(error).strip())
    text = re.sub(r"^Plugin <.*?> for hook ", "hook ", text)
    text = re.sub(r"\s*\n\s*", "; ", text)
    return PluginError(
        f"plugin {name!r} is invalid: {text}; fix its hook implementation or block it with "
        f"{BLOCK_ENVIRONMENT_VARIABLE}={name}"
    )


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

    def metrics_for(self, names: Iterable[str], experiment: str) -> tuple[MetricSpec, ...]:
        """Return the specs of `names`, rejecting metrics that do not apply to `experiment`."""
        specs = []
        for name in names:
            spec = self.metric(name)
            if experiment not in spec.experiments:
                raise UsageError(
                    f"invalid metric {name!r} for {experiment}: it applies to {', '.join(spec.experiments)} experiments only"
                )
            specs.append(spec)
        return tuple(specs)

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

    def __init__(self, manager: pluggy.PluginManager, versions: dict[str, str] | None = None) -> None:
        self.manager = manager
        self.versions = versions or {}
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

    def measure(self, *, a: TrainingState, b: TrainingState, context: Any) -> dict[str, float]:
        """Call each plugin's `measure` and merge the values.

        Plugins are called one by one, in pluggy's order, so that a value for a metric
        the plugin did not register is rejected with both plugins named.
        """
        arguments = {"a": a, "b": b, "context": context}
        owners = self.registry.metrics
        merged: dict[str, float] = {}
        for impl in reversed(self.manager.hook.measure.get_hookimpls()):
            if impl.hookwrapper or impl.wrapper:
                # NOTE: wrappers around measure are not called; no built-in uses one.
                continue
            try:
                result = impl.function(**{name: arguments[name] for name in impl.argnames})
            except TwophaseError:
                raise
            except Exception as error:
                raise PluginError(
                    f"plugin {impl.plugin_name!r} failed in hook measure between {_describe(a)} and {_describe(b)}: "
                    f"{type(error).__name__}: {error}"
                ) from error
            for name in result or {}:
                owner = owners.get(name)
                if owner is None or owner.plugin != impl.plugin_name:
                    registered = f", which plugin {owner.plugin!r} registers" if owner else ", which no plugin registers"
                    raise PluginError(
                        f"plugin {impl.plugin_name!r} returned metric {name!r}{registered}; "
                        "a plugin may return only the metrics it registers in register_metrics"
                    )
            merged.update(result or {})
        return merged

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


def _describe(state: TrainingState) -> str:
    """Name a state by its run and step, such as 'twin-t0-100 at step 400'."""
    return f"{state.metadata.get('run', 'state')} at step {state.step}"


def _call_registration(impl: pluggy.HookImpl, hook_name: str) -> list[Any]:
    try:
        result = impl.function()
    except Exception as error:
        raise PluginError(
            f"plugin {impl.plugin_name!r} failed in hook {hook_name}: {type(error).__name__}: {error}"
        ) from error
    if result is None:
        return []
    if not isinstance(result, (list, tuple)):
        raise PluginError(
            f"plugin {impl.plugin_name!r} returned {type(result).__name__} from {hook_name}; "
            "expected a list of specs"
        )
    return list(result)


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
