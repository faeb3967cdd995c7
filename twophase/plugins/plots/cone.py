"""Figures of a cone store: kernel distance over all pairs, its views, and the kernel embedding."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

from twophase.core.analysis import metric_label
from twophase.core.cone.views import KERNEL_DISTANCE, default_taus, distance_from, kernel_distances, offset_curve
from twophase.plugins.plots.axes import LINTHRESH, save_figure, step_edges

logger = logging.getLogger(__name__)


def plot_cone(dataset: xr.Dataset, out_dir: Path) -> list[Path]:
    """Write the cone figures as PNG files into `out_dir`; return their paths."""
    if KERNEL_DISTANCE not in [str(name) for name in dataset.metric.values]:
        logger.warning("the store has no %s metric; no cone figures drawn", KERNEL_DISTANCE)
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [
        save_figure(_heatmap(dataset), out_dir / "cone-kernel_distance.png"),
        save_figure(_from_tau(dataset), out_dir / "cone-distance-from-tau.png"),
    ]
    if dataset.sizes.get("dt", 0):
        written.append(save_figure(_offsets(dataset), out_dir / "cone-offset-distance.png"))
    if "kernel_embedding" in dataset and np.isfinite(dataset.kernel_embedding.values).all():
        written.append(save_figure(_embedding(dataset), out_dir / "cone-embedding.png"))
    return written


def _heatmap(dataset: xr.Dataset) -> Figure:
    """Draw S over all pairs (tau, t) of checkpoints."""
    distance = kernel_distances(dataset).transpose("t1", "t0")
    steps = dataset.t0.values
    cells = np.ma.masked_invalid(distance.values)
    positive = cells.compressed()[cells.compressed() > 0]
    # The diagonal is 0 exactly; a log scale shows the off-diagonal range and leaves it blank.
    norm = LogNorm(vmin=positive.min(), vmax=positive.max()) if positive.size else Normalize()
    cells = np.ma.masked_where(cells.filled(0) <= 0, cells) if positive.size else cells

    figure = Figure(figsize=(6.4, 5.2), layout="constrained")
    axes = figure.add_subplot()
    mesh = axes.pcolormesh(step_edges(steps), step_edges(dataset.t1.values), cells, norm=norm, cmap="viridis")
    figure.colorbar(mesh, ax=axes).set_label(metric_label(dataset, KERNEL_DISTANCE))
    axes.set_xscale("symlog", linthresh=LINTHRESH)
    axes.set_yscale("symlog", linthresh=LINTHRESH)
    axes.set_xlabel("tau (steps)")
    axes.set_ylabel("t (steps)")
    axes.set_title("S(tau, t): eNTK kernel distance between checkpoints\nblank: the diagonal, where S = 0", fontsize=10)
    return figure


def _from_tau(dataset: xr.Dataset) -> Figure:
    """Draw S(tau, t) against t for a few reference steps tau."""
    figure = Figure(figsize=(6.4, 4.4), layout="constrained")
    axes = figure.add_subplot()
    for tau in default_taus(dataset):
        curve = distance_from(dataset, tau)
        axes.plot(curve.t1.values, curve.values, marker="o", markersize=3, label=f"tau = {tau}")
    axes.set_xscale("symlog", linthresh=LINTHRESH)
    axes.set_xlabel("t (steps)")
    axes.set_ylabel(metric_label(dataset, KERNEL_DISTANCE))
    axes.set_title("S(tau, t): how far the eNTK moves after each tau", fontsize=10)
    axes.legend()
    return figure


def _offsets(dataset: xr.Dataset) -> Figure:
    """Draw S(t, t + dt) against t for every offset dt."""
    figure = Figure(figsize=(6.4, 4.4), layout="constrained")
    axes = figure.add_subplot()
    for dt in dataset.dt.values:
        curve = offset_curve(dataset, int(dt))
        axes.plot(curve.t1.values, curve.values, marker="o", markersize=3, label=f"dt = {int(dt)} steps")
    axes.set_xscale("symlog", linthresh=LINTHRESH)
    axes.set_xlabel("t (steps)")
    axes.set_ylabel(metric_label(dataset, KERNEL_DISTANCE))
    axes.set_title("S(t, t + dt): how fast the eNTK moves at step t", fontsize=10)
    axes.legend()
    return figure


def _embedding(dataset: xr.Dataset) -> Figure:
    """Draw the 2-D embedding of the kernels, coloured by step, joined in step order."""
    embedding = dataset.kernel_embedding.values
    steps = dataset.t1.values
    figure = Figure(figsize=(6.0, 5.0), layout="constrained")
    axes = figure.add_subplot()
    axes.plot(embedding[:, 0], embedding[:, 1], color="0.7", linewidth=1, zorder=1)
    norm = LogNorm(vmin=max(steps.min(), 1), vmax=max(steps.max(), 2))
    points = axes.scatter(embedding[:, 0], embedding[:, 1], c=np.maximum(steps, 1), cmap="viridis", norm=norm, zorder=2)
    figure.colorbar(points, ax=axes).set_label("step (steps; step 0 drawn as 1)")
    axes.set_xlabel("component 1 (degrees)")
    axes.set_ylabel("component 2 (degrees)")
    axes.set_aspect("equal", adjustable="datalim")
    axes.set_title("eNTK trajectory: classical MDS of the angles between kernels", fontsize=10)
    return figure
