"""twophase: measure the chaotic and the stable phase of neural-network training.

Plugins import `hookimpl` from here to mark their hook implementations.
"""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("twophase")

__all__ = ["__version__", "hookimpl"]
