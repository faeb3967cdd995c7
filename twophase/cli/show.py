"""`twophase show`: print a chaos store's final values per t0, noise floor and transition step.

A cone store gets its own table, printed by `twophase.cli.cone_table`.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
import xarray as xr
from rich.table import Table

from twophase.cli.cone_table import show_cone
from twophase.cli.console import console, handle_errors, setup_logging
from twophase.core.analysis import (
    DEFAULT_TRANSITION_METRIC,
    DEFAULT_TRANSITION_THRESHOLD,
    SEED,
    STATUS_MEANINGS,
    control_floor,
    final_values,
    last_t1,
    locate_store,
    metric_names,
    open_results,
    status_counts,
    summarize_seeds,
    transition_step,
)
from twophase.core.store import PARENT_DIVERGED_ATTR

logger = logging.getLogger(__name__)

# The metrics of the table with their symbol, header units and number format. C spans
# orders of magnitude, so it is printed in scientific notation.
COLUMNS = {
    "param_cosine": ("C", "", ".2e"),
    "loss_barrier": ("B", " (nats)", ".4f"),
    "disagreement": ("D", "", ".4f"),
}

TABLE_OMITS = ("param_distance", "error_barrier")

OutArgument = Annotated[Path, typer.Argument(help="Output folder of a chaos or cone experiment, or its results.zarr.")]


@handle_errors
def show_command(
    out: OutArgument,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold",
            help="Test loss barrier in nats below which a t0 counts as stable, for the transition step. "
            "Default: the experiment's chaos.transition_threshold, recorded in the store.",
        ),
    ] = None,
) -> None:
    """Print a chaos store's C, B and D per t0, its noise floor and transition step, or a cone store's cone table."""
    setup_logging(verbose=False)
    show_results(out, threshold)


def show_results(out: Path, threshold: float | None = None) -> None:
    """Print the table, the noise floor and the transition step of the store in `out`.

    The store is only read; the transition step stored in it is the one at the
    experiment's own threshold.
    """
    store = locate_store(out)
    dataset = open_results(store)
    if dataset.attrs.get("experiment") == "cone":
        show_cone(dataset, store)
        return
    if threshold is None:
        threshold = float(dataset.attrs.get("transition_threshold", DEFAULT_TRANSITION_THRESHOLD))
    stored = metric_names(dataset)
    # C, B and D first, then metrics of plugins. The parameter distance and the error
    # barrier stay in the store only, so that the table fits 80 columns.
    metrics = [metric for metric in COLUMNS if metric in stored]
    metrics += [metric for metric in stored if metric not in COLUMNS and metric not in TABLE_OMITS]

    console.print(_final_table(dataset, metrics, store))
    _print_status_totals(dataset)
    if PARENT_DIVERGED_ATTR in dataset.attrs:
        console.print(
            f"the parent's training loss became NaN or infinite ({dataset.attrs[PARENT_DIVERGED_ATTR]}); "
            "later cells stay pending",
            highlight=False,
            soft_wrap=True,
        )
    _print_control(dataset, metrics)

    if DEFAULT_TRANSITION_METRIC not in metrics:
        console.print(f"transition step: not estimated, the store has no {DEFAULT_TRANSITION_METRIC} metric", highlight=False)
        return
    step = transition_step(dataset, threshold)
    seeds = ", mean over seeds" if SEED in dataset.dims else ""
    console.print(
        f"transition step: {'none' if step is None else step} (threshold {threshold:g} nats). "
        f"Rule: the earliest t0 from which every later t0 too has B below the threshold at t1 = "
        f"{last_t1(dataset)}{seeds}; a missing value counts as not below.",
        highlight=False,
        soft_wrap=True,
    )


def _final_table(dataset: xr.Dataset, metrics: list[str], store: Path) -> Table:
    final = final_values(dataset)
    norm = summarize_seeds(dataset["perturbation_norm"])
    changed = summarize_seeds(dataset["changed_fraction"])
    counts = status_counts(dataset)
    show_status = any(row["diverged"] or row["failed"] for row in counts.values())
    final_status = dataset["status"].isel(t1=-1, drop=True)

    seeds = f", mean ± std over {dataset.sizes[SEED]} seeds" if SEED in dataset.dims else ""
    long_names = ", ".join(f"{_column(dataset, m)[0]}: {dataset.metric_long_name.sel(metric=m).item()}" for m in metrics)
    table = Table(
        title=f"parent vs twin at the last t1 = {last_t1(dataset)}{seeds} ({store})",
        caption=long_names,
    )
    table.add_column("t0", justify="right")
    for metric in metrics:
        symbol, units, _ = _column(dataset, metric)
        table.add_column(symbol + units, justify="right")
    # Headers broken by hand, so that the table fits 80 columns without cutting words.
    table.add_column("perturbation\nnorm", justify="right", min_width=len("perturbation"))
    table.add_column("changed\nfraction", justify="right")
    if show_status:
        table.add_column("cells not\ndone", justify="left")

    for t0 in dataset.t0.values:
        missing = _missing_reason(final_status.sel(t0=t0).values, int(t0), last_t1(dataset))
        row = [str(int(t0))]
        for metric in metrics:
            cell = final.sel(t0=t0, metric=metric)
            row.append(_format(cell, _column(dataset, metric)[2], missing, separator="\n"))
        row.append(_format(norm.sel(t0=t0), ".4e", separator="\n", spread_spec=".2e"))
        row.append(_format(changed.sel(t0=t0), ".4f", separator="\n"))
        if show_status:
            row.append(_not_done(counts[int(t0)]))
        table.add_row(*row)
    return table


def _column(dataset: xr.Dataset, metric: str) -> tuple[str, str, str]:
    """Return a metric's column header, its units in brackets, and its number format."""
    if metric in COLUMNS:
        return COLUMNS[metric]
    units = str(dataset.metric_units.sel(metric=metric).item())
    return metric, f" ({units})" if units and units != "1" else "", ".4g"


def _print_status_totals(dataset: xr.Dataset) -> None:
    totals = {meaning: 0 for meaning in STATUS_MEANINGS}
    for row in status_counts(dataset).values():
        for meaning, count in row.items():
            totals[meaning] += count
    listed = ", ".join(f"{count} {meaning}" for meaning, count in totals.items() if count)
    console.print(f"cells with t1 >= t0: {listed or 'none'}", highlight=False)


def _print_control(dataset: xr.Dataset, metrics: list[str]) -> None:
    floor = control_floor(dataset)
    values = ", ".join(
        f"{_column(dataset, metric)[0]} {_format(floor.sel(metric=metric), _column(dataset, metric)[2], missing='not measured')}"
        for metric in metrics
    )
    console.print(
        f"control twin (no perturbation, branched at t0 = {int(dataset.attrs['control_t0'])}) "
        f"at t1 = {last_t1(dataset)}: {values or 'no C, B or D in the store'}",
        highlight=False,
        soft_wrap=True,
    )


def _format(
    cell: xr.Dataset, spec: str, missing: str = "nan", separator: str = " ", spread_spec: str | None = None
) -> str:
    """Format a `value` with "± spread" after `separator` when there is a spread; `missing` replaces NaN."""
    value = float(cell["value"])
    if not math.isfinite(value):
        return missing
    text = format(value, spec)
    if "spread" in cell and math.isfinite(float(cell["spread"])):
        text += f"{separator}± {format(float(cell['spread']), spread_spec or spec)}"
    return text


def _missing_reason(codes: np.ndarray, t0: int, t1: int) -> str:
    """Name the statuses of a final cell without a value, over seeds, such as "diverged"."""
    if t1 < t0:
        return "t1 < t0"
    meanings = sorted({_meaning(int(code)) for code in np.atleast_1d(codes) if int(code) != 1})
    return "/".join(meanings) or "nan"


def _not_done(counts: dict[str, int]) -> str:
    return ", ".join(f"{counts[meaning]} {meaning}" for meaning in ("diverged", "failed") if counts[meaning])


def _meaning(code: int) -> str:
    return STATUS_MEANINGS[code] if 0 <= code < len(STATUS_MEANINGS) else f"status {code}"
