"""Axes and files shared by the figures: symmetric-log step axes and PNG output."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.scale import SymmetricalLogScale

logger = logging.getLogger(__name__)

# Step axes are linear on [0, 1] and logarithmic above, so that step 0 stays on them.
LINTHRESH = 1
DPI = 150


def save_figure(figure: Figure, path: Path) -> Path:
    """Write the figure as a PNG file, free it, and return the path."""
    # A bare Figure with an Agg canvas never touches pyplot, so no display backend is
    # chosen and no global figure list keeps the figure alive. Clearing frees its artists.
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=DPI)
    figure.clear()
    logger.debug("wrote %s", path)
    return path


def step_edges(steps: np.ndarray) -> np.ndarray:
    """Return cell edges halfway between the steps in symlog coordinates, so cells look even."""
    transform = SymmetricalLogScale(None, base=10, linthresh=LINTHRESH, linscale=1).get_transform()
    centres = transform.transform(steps.astype(np.float64))
    if len(centres) == 1:
        edges = np.array([centres[0] - 0.5, centres[0] + 0.5])
    else:
        middles = (centres[:-1] + centres[1:]) / 2
        first = 2 * centres[0] - middles[0]
        last = 2 * centres[-1] - middles[-1]
        edges = np.concatenate([[first], middles, [last]])
    return transform.inverted().transform(edges)


def padded_limits(steps: np.ndarray, pad: float = 0.3) -> tuple[float, float]:
    """Return axis limits `pad` symlog units beyond the steps, as the default margins reach negative steps."""
    transform = SymmetricalLogScale(None, base=10, linthresh=LINTHRESH, linscale=1).get_transform()
    low, high = transform.transform(np.array([steps.min(), steps.max()], dtype=np.float64))
    limits = transform.inverted().transform(np.array([low - pad, high + pad]))
    return float(limits[0]), float(limits[1])
