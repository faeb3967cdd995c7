"""`twophase plugins`: list the registered plugins and what each provides."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from twophase import __version__
from twophase.cli.console import console, handle_errors, setup_logging
from twophase.core.plugins import (
    BLOCK_ENVIRONMENT_VARIABLE,
    BUILTIN_PLUGINS,
    blocked_plugin_names,
    create_hooks,
    installed_plugin_names,
)

_REGISTRATION_HOOKS = ("register_models", "register_datasets", "register_perturbations", "register_metrics")


@handle_errors
def plugins_command(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False,
) -> None:
    """List the registered plugins, their versions, and the names and hooks each provides."""
    setup_logging(verbose)
    hooks = create_hooks()
    registry = hooks.registry
    manager = hooks.manager

    table = Table(title="twophase plugins")
    # Names stay whole: TWOPHASE_BLOCK_PLUGINS needs them exactly.
    table.add_column("plugin", no_wrap=True)
    table.add_column("version", no_wrap=True)
    table.add_column("provides")
    for name, plugin in manager.list_name_plugin():
        if plugin is None:
            continue
        provided = []
        for kind, entries in (
            ("models", registry.models),
            ("data sets", registry.datasets),
            ("perturbations", registry.perturbations),
            ("metrics", registry.metrics),
        ):
            names = sorted(
                f"{key}:NAME" if getattr(entry.spec, "namespace", False) else key
                for key, entry in entries.items()
                if entry.plugin == name
            )
            if names:
                provided.append(f"{kind}: {', '.join(names)}")
        hook_names = sorted(
            caller.name
            for caller in manager.get_hookcallers(plugin) or []
            if caller.name not in _REGISTRATION_HOOKS
        )
        if hook_names:
            provided.append(f"hooks: {', '.join(hook_names)}")
        version = hooks.versions.get(name, f"built-in {__version__}" if name in BUILTIN_PLUGINS else "not installed")
        table.add_row(name, version, "\n".join(provided) or "-")
    console.print(table)

    blocked = blocked_plugin_names()
    if blocked:
        known = set(BUILTIN_PLUGINS) | set(installed_plugin_names())
        labels = [name if name in known else f"{name} (no such plugin)" for name in blocked]
        console.print(f"blocked by {BLOCK_ENVIRONMENT_VARIABLE}: {', '.join(labels)}", highlight=False)
