"""twophase: measure the chaotic and the stable phase of neural-network training.

Plugins import `hookimpl` from here to mark their hook implementations. Notebooks use
`open_results`, `load_config`, `train` and `run_chaos`, which import torch on first use.
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
