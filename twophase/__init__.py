"""twophase: measure the chaotic and the stable phase of neural-network training.

Plugins import `hookimpl` from here to mark their hook implementations. Notebooks use
`open_results`, the experiment functions (`train`, `run_chaos`, `run_cone` with
`load_config`) and the views on results (`final_values`, `transition_step`,
`distance_from`, `offset_curve` and others). All but `hookimpl` import on first use.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import xarray

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("twophase")

_LAZY = {
    "load_config": "twophase.core.config",
    "RunConfig": "twophase.core.config",
    "train": "twophase.core.training",
    "ChaosConfig": "twophase.core.chaos",
    "run_chaos": "twophase.core.chaos",
    "ConeConfig": "twophase.core.cone",
    "run_cone": "twophase.core.cone",
    "final_values": "twophase.core.analysis",
    "control_floor": "twophase.core.analysis",
    "transition_step": "twophase.core.analysis",
    "kernel_distances": "twophase.core.cone.views",
    "distance_from": "twophase.core.cone.views",
    "offset_curve": "twophase.core.cone.views",
    "kernel_transition_step": "twophase.core.cone.views",
}

__all__ = ["__version__", "hookimpl", "open_results", *_LAZY]


def open_results(path: str | Path) -> xarray.Dataset:
    """Open an experiment's results as an xarray Dataset, loaded into memory.

    `path` is the experiment's output folder or its `results.zarr`.
    """
    from twophase.core.analysis import locate_store
    from twophase.core.analysis import open_results as open_store

    return open_store(locate_store(Path(path)))


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'twophase' has no attribute {name!r}")
