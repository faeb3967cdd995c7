"""Figures of a chaos store: parent-vs-twin heatmaps over (t0, t1) and final values against t0.

Step axes use matplotlib's symmetric-log scale with linthresh 1: linear on [0, 1] and
logarithmic above, so that the branch at step 0 stays on the axis that a log scale
would drop.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

from twophase.core.analysis import (
    DEFAULT_TRANSITION_METRIC,
    DEFAULT_TRANSITION_THRESHOLD,
    SEED,
    control_floor,
    final_values,
    last_t1,
    metric_label,
    metric_names,
    transition_step,
)
from twophase.plugins.plots.axes import (
    LINTHRESH,
    padded_limits,
    save_figure,
    step_edges,
)

logger = logging.getLogger(__name__)

HEATMAP_METRICS = ("param_cosine", "loss_barrier", "disagreement")
FINAL_METRICS = ("loss_barrier", "disagreement")
SYMBOLS = {"param_cosine": "C", "loss_barrier": "B", "disagreement": "D"}
# Metrics that span orders of magnitude, drawn with a log colour scale.
LOG_COLOUR_METRICS = ("param_cosine",)
NOT_DONE = (2, 3)  # status codes diverged and failed


def plot_chaos(dataset: xr.Dataset, out_dir: Path, threshold: float = DEFAULT_TRANSITION_THRESHOLD) -> list[Path]:
    """Write the heatmaps of C, B and D and the final-values figure into `out_dir`; return their paths.

    Metrics missing from the store are skipped with a warning. `threshold` is drawn in the
    final loss barrier panel with the transition step it gives.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    available = metric_names(dataset)
    written = []

    for metric in HEATMAP_METRICS:
        if metric not in available:
            logger.warning("the results store has no metric %r; skipping its heatmap", metric)
            continue
        written.append(save_figure(_heatmap(dataset, metric), out_dir / f"chaos-{metric}.png"))

    final_metrics = [metric for metric in FINAL_METRICS if metric in available]
    if final_metrics:
        written.append(save_figure(_final_figure(dataset, final_metrics, threshold), out_dir / "chaos-final.png"))
    else:
        logger.warning("the results store has none of %s; skipping the final-values figure", ", ".join(FINAL_METRICS))
    return written


def _seed_note(dataset: xr.Dataset) -> str:
    return f", mean over {dataset.sizes[SEED]} seeds" if SEED in dataset.dims else ""


def _heatmap(dataset: xr.Dataset, metric: str) -> Figure:
    """Draw one metric over (t0, t1), blank where t1 < t0 or no value was measured."""
    values = dataset["values"].sel(metric=metric, drop=True)
    if SEED in values.dims:
        values = values.mean(SEED, skipna=False)
    t0 = dataset.t0.values
    t1 = dataset.t1.values
    grid = values.transpose("t1", "t0").values
    measured = t1[:, None] >= t0[None, :]
    cells = np.ma.masked_where(~measured | ~np.isfinite(grid), grid)

    norm, blank_note = _colour_norm(cells, metric)
    if blank_note:
        cells = np.ma.masked_where(cells.filled(np.nan) <= 0, cells)

    figure = Figure(figsize=(6.4, 5.2), layout="constrained")
    axes = figure.add_subplot()
    mesh = axes.pcolormesh(step_edges(t0), step_edges(t1), cells, norm=norm, cmap="viridis", shading="flat")
    colour_bar = figure.colorbar(mesh, ax=axes)
    colour_bar.set_label(metric_label(dataset, metric))

    status = dataset["status"]
    not_done = status.isin(NOT_DONE)
    if SEED in not_done.dims:
        not_done = not_done.any(SEED)
    rows, columns = np.nonzero(not_done.transpose("t1", "t0").values & measured)
    if len(rows):
        axes.plot(t0[columns], t1[rows], "x", color="red", markersize=8, label="diverged or failed")
        # Cells with t1 < t0 are never measured, so the lower right corner is blank.
        axes.legend(loc="lower right")

    axes.set_xscale("symlog", linthresh=LINTHRESH)
    axes.set_yscale("symlog", linthresh=LINTHRESH)
    axes.set_xlabel("t0 (steps)")
    axes.set_ylabel("t1 (steps)")
    symbol = SYMBOLS.get(metric, metric)
    axes.set_title(
        f"{symbol}: parent vs twin branched at t0, measured at t1{_seed_note(dataset)}\n"
        f"blank: t1 < t0 or not measured{blank_note}",
        fontsize=10,
    )
    return figure


def _colour_norm(cells: np.ma.MaskedArray, metric: str) -> tuple[Normalize, str]:
    """Return the colour scale and, for a log scale, a note on the cells it leaves blank."""
    visible = cells.compressed()
    if len(visible) == 0:
        return Normalize(), ""
    if metric in LOG_COLOUR_METRICS:
        positive = visible[visible > 0]
        if len(positive):
            note = "; values <= 0 left blank on this log scale" if (visible <= 0).any() else ""
            return LogNorm(vmin=positive.min(), vmax=positive.max()), note
        logger.warning("metric %r has no positive values; drawing it on a linear colour scale", metric)
    return Normalize(vmin=visible.min(), vmax=visible.max()), ""


def _final_figure(dataset: xr.Dataset, metrics: list[str], threshold: float) -> Figure:
    """Draw each metric at the last t1 against t0, with the control twin's level."""
    final = final_values(dataset)
    floor = control_floor(dataset)
    t0 = dataset.t0.values
    control_t0 = int(dataset.attrs["control_t0"])

    final_status = dataset["status"].isel(t1=-1, drop=True).isin(NOT_DONE)
    if SEED in final_status.dims:
        final_status = final_status.any(SEED)

    figure = Figure(figsize=(5.2 * len(metrics), 4.4), layout="constrained")
    figure.suptitle(f"parent vs twin at the last t1 = {last_t1(dataset)} steps{_seed_note(dataset)}", fontsize=11)
    for axes, metric in zip(figure.subplots(1, len(metrics), squeeze=False)[0], metrics, strict=True):
        mean = final["value"].sel(metric=metric).values
        axes.plot(t0, mean, "o-", label="twin" if "spread" not in final else "twin, mean over seeds")
        if "spread" in final:
            spread = final["spread"].sel(metric=metric).values
            axes.fill_between(t0, mean - spread, mean + spread, alpha=0.3, label="± 1 std over seeds")

        diverged = final_status.values & ~np.isfinite(mean)
        if diverged.any():
            axes.plot(
                t0[diverged], np.zeros(diverged.sum()), "x", color="red", markersize=8,
                transform=axes.get_xaxis_transform(), clip_on=False, label="diverged or failed (no value)",
            )

        level = float(floor["value"].sel(metric=metric))
        if np.isfinite(level):
            axes.axhline(level, color="grey", linestyle="--", label=f"control twin (no perturbation, t0 = {control_t0})")
        else:
            logger.warning("the control twin has no %s at the last t1; drawing no control line", metric)

        if metric == DEFAULT_TRANSITION_METRIC:
            _draw_transition(axes, dataset, threshold)

        axes.set_xscale("symlog", linthresh=LINTHRESH)
        axes.set_xlim(*padded_limits(t0))
        axes.set_xlabel("t0 (steps)")
        axes.set_ylabel(metric_label(dataset, metric))
        axes.set_title(f"{SYMBOLS.get(metric, metric)} at the last t1", fontsize=10)
        # Where the values are depends on the run, so matplotlib picks the emptiest corner.
        axes.legend(fontsize=8, loc="best")
    return figure


def _draw_transition(axes: Axes, dataset: xr.Dataset, threshold: float) -> None:
    units = str(dataset.metric_units.sel(metric=DEFAULT_TRANSITION_METRIC).item())
    axes.axhline(threshold, color="black", linestyle=":", label=f"threshold {threshold:g} {units}")
    step = transition_step(dataset, threshold)
    if step is not None:
        axes.axvline(step, color="black", linestyle="-.", linewidth=1, label=f"transition step {step}")
