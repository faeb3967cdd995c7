"""The `twophase show` output of a cone store: the cone around each tau and the kernel's transition."""

from __future__ import annotations

from pathlib import Path

import xarray as xr
from rich.table import Table

from twophase.cli.console import console
from twophase.core.cone.views import (
    LATE_FRACTION,
    LATE_LEVEL_MARGIN,
    KERNEL_DISTANCE,
    default_taus,
    distance_from,
    kernel_transition_step,
)


def show_cone(dataset: xr.Dataset, store: Path) -> None:
    """Print, per tau, the cone half-angle and the plateau of S(tau, t), then the kernel's transition step."""
    if KERNEL_DISTANCE not in [str(name) for name in dataset.metric.values]:
        console.print(f"the store in {store} has no {KERNEL_DISTANCE} metric; nothing to show", highlight=False)
        return
    last = int(dataset.t1.values[-1])
    table = Table(title=f"eNTK cone around each tau ({store})")
    table.add_column("tau", justify="right")
    table.add_column("cone half-angle (degrees)", justify="right")
    table.add_column(f"S(tau, t = {last})", justify="right")
    table.add_column("kernel norm at tau", justify="right")
    for tau in default_taus(dataset):
        curve = distance_from(dataset, tau)
        table.add_row(
            str(tau),
            f"{float(dataset.cone_half_angle.sel(t0=tau)):.2f}",
            f"{float(curve.isel(t1=-1)):.4f}",
            f"{float(dataset.kernel_norm.sel(t1=tau)):.4g}",
        )
    console.print(table)
    console.print(
        "cone half-angle: the largest angle between the eNTK at tau and any later eNTK; "
        "S(tau, t) at the last checkpoint is the plateau that S reaches",
        highlight=False,
        soft_wrap=True,
    )

    for dt in (int(value) for value in dataset.dt.values):
        step = kernel_transition_step(dataset, dt)
        console.print(
            f"kernel transition for dt = {dt} steps: {'none' if step is None else step}. Rule: the earliest t from which "
            f"S(t, t + dt) stays within {LATE_LEVEL_MARGIN:.0%} of its drop from the peak above its late level, "
            f"the median of the last {LATE_FRACTION:.0%} of its points.",
            highlight=False,
            soft_wrap=True,
        )
