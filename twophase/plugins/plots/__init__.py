"""Built-in figures of the results stores, written as PNG files with matplotlib's Agg renderer."""

from twophase.plugins.plots.chaos import plot_chaos
from twophase.plugins.plots.cone import plot_cone

__all__ = ["plot_chaos", "plot_cone"]
