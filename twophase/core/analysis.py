"""Read a chaos results store and summarize it: final values, noise floor, transition step.

The summaries take the `xarray.Dataset` of `OUT/results.zarr` (see `open_results`) and
never print. With a leading `seed` dimension they average over seeds and report the
sample standard deviation over seeds as the spread.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import xarray as xr

from twophase.core.errors import OutputError, UsageError, unknown_name
from twophase.core.output import CURVES_STORE, RESULTS_STORE
from twophase.core.store import require_intact

logger = logging.getLogger(__name__)

SUPPORTED_EXPERIMENTS = ("chaos", "cone")

# A test loss barrier below 0.1 nats is taken to mean that parent and twin lie in one
# basin up to noise, at the scale of barriers seen in linear-mode-connectivity studies.
DEFAULT_TRANSITION_THRESHOLD = 0.1
DEFAULT_TRANSITION_METRIC = "loss_barrier"

REQUIRED_VARIABLES = {
    "chaos": ("values", "status", "control", "perturbation_norm", "changed_fraction"),
    "cone": ("values", "status", "kernel_norm", "offset_distance", "cone_half_angle", "kernel_embedding"),
}
REQUIRED_COORDINATES = ("t0", "t1", "metric", "metric_long_name", "metric_units")
REQUIRED_ATTRS = {"chaos": ("experiment", "control_t0"), "cone": ("experiment",)}
EXPECTED_DIMENSIONS = {
    "chaos": {"values": {"t0", "t1", "metric"}, "status": {"t0", "t1"}, "control": {"t1", "metric"}},
    "cone": {"values": {"t0", "t1", "metric"}, "status": {"t0", "t1"}, "offset_distance": {"dt", "t1"}},
}

STATUS_MEANINGS = ("pending", "done", "diverged", "failed")
SEED = "seed"


def locate_store(out: Path) -> Path:
    """Return the results store in the output folder `out`, or `out` itself when it is the store.

    Raises OutputError when `out` does not exist or contains no store.
    """
    if not out.exists():
        raise OutputError(f"output folder {str(out)!r} not found; pass the output folder of a chaos or cone experiment")
    if (out / "zarr.json").is_file():
        return out
    if (out / RESULTS_STORE).is_dir():
        # `open_results` names what is damaged when the store's own metadata is missing.
        return out / RESULTS_STORE
    if (out / CURVES_STORE).is_dir():
        raise OutputError(
            f"{str(out)!r} contains a `twophase train` run, which has no {RESULTS_STORE}; read its curves with "
            f"xarray.open_zarr('{out / CURVES_STORE}'), or pass the folder of a chaos or cone experiment"
        )
    raise OutputError(
        f"{str(out)!r} contains no {RESULTS_STORE}; pass the output folder of a chaos or cone experiment, "
        "or run one into it first"
    )


def open_results(store: Path) -> xr.Dataset:
    """Load the results store at `store` into memory and check it with `find_damage` and `check_store`."""
    require_intact(store, f"results store {str(store)!r}", "rerun the experiment with --overwrite to rewrite it")
    try:
        dataset = xr.open_zarr(store, consolidated=False).load()
    except (OSError, ValueError, KeyError) as error:
        raise OutputError(
            f"cannot read results store {str(store)!r} ({type(error).__name__}: {error}); "
            "rerun the experiment with --overwrite to rewrite it"
        ) from None
    check_store(dataset, name=f"results store {str(store)!r}")

    status = dataset["status"]
    if status.dtype.kind == "f":
        # A `_FillValue` of 0 in the encoding makes xarray decode the cells that were never
        # written, which are pending, as NaN in a float array.
        dataset["status"] = status.fillna(0).astype(np.int8)
        dataset["status"].attrs = status.attrs
    return dataset


def check_store(dataset: xr.Dataset, name: str = "results store") -> None:
    """Raise OutputError unless `dataset` is a chaos or cone store with every array and attr that show and plot read.

    Checks names and dimensions, not values: a store with wrong numbers passes.
    """
    experiment = dataset.attrs.get("experiment")
    if experiment is not None and experiment not in SUPPORTED_EXPERIMENTS:
        raise OutputError(
            f"{name} is of kind {experiment!r}, which this command does not support yet; "
            f"it reads {', '.join(SUPPORTED_EXPERIMENTS)} stores only"
        )

    kind = experiment or "chaos"
    missing = [f"array {key}" for key in REQUIRED_VARIABLES[kind] if key not in dataset.data_vars]
    missing += [f"coordinate {key}" for key in REQUIRED_COORDINATES if key not in dataset.coords]
    missing += [f"attr {key}" for key in REQUIRED_ATTRS[kind] if key not in dataset.attrs]
    if missing:
        raise OutputError(f"{name} is damaged: missing {', '.join(missing)}; rerun the experiment with --overwrite to rewrite it")

    for key, dims in EXPECTED_DIMENSIONS[kind].items():
        found = set(dataset[key].dims) - {SEED}
        if found != dims:
            raise OutputError(
                f"{name} is damaged: array {key} has dimensions {sorted(found)}, expected {sorted(dims)} "
                "(and optionally seed); rerun the experiment with --overwrite to rewrite it"
            )
    for dim in ("t0", "t1"):
        if dataset.sizes[dim] == 0:
            raise OutputError(f"{name} has no {dim} steps; rerun the experiment with at least one {dim}")


def metric_names(dataset: xr.Dataset) -> list[str]:
    return [str(name) for name in dataset.metric.values]


def metric_label(dataset: xr.Dataset, metric: str) -> str:
    """Return the metric's long name with its units in brackets, "dimensionless" for units "1"."""
    long_name = str(dataset.metric_long_name.sel(metric=metric).item())
    units = str(dataset.metric_units.sel(metric=metric).item())
    if not units:
        return long_name
    return f"{long_name} ({'dimensionless' if units == '1' else units})"


def last_t1(dataset: xr.Dataset) -> int:
    return int(dataset.t1.values[-1])


def final_values(dataset: xr.Dataset) -> xr.Dataset:
    """Return `value(t0, metric)` at the last t1 and, with seeds, `spread(t0, metric)`.

    The mean over seeds keeps NaN: a t0 where one seed diverged has no mean value.
    """
    return summarize_seeds(dataset["values"].isel(t1=-1, drop=True))


def control_floor(dataset: xr.Dataset) -> xr.Dataset:
    """Return the control twin's `value(metric)` at the last t1 and, with seeds, `spread(metric)`."""
    return summarize_seeds(dataset["control"].isel(t1=-1, drop=True))


def summarize_seeds(array: xr.DataArray) -> xr.Dataset:
    """Return `value`, the mean over seeds, and `spread`, their sample standard deviation.

    Without a seed dimension `value` is `array` and there is no `spread`. With one seed
    the spread is NaN.
    """
    if SEED not in array.dims:
        return xr.Dataset({"value": array})
    return xr.Dataset(
        {
            "value": array.mean(SEED, skipna=False),
            "spread": array.std(SEED, ddof=1, skipna=False),
        }
    )


def transition_step(
    dataset: xr.Dataset,
    threshold: float = DEFAULT_TRANSITION_THRESHOLD,
    metric: str = DEFAULT_TRANSITION_METRIC,
) -> int | None:
    """Return the earliest t0 whose final-t1 `metric`, and that of every later t0, is below `threshold`.

    With seeds the rule applies to the mean over seeds. A NaN cell (diverged, failed or
    pending) counts as not below the threshold. Returns None when the last t0 is not
    below the threshold, so that no t0 qualifies.
    """
    if not math.isfinite(threshold) or threshold <= 0:
        raise UsageError(f"invalid transition threshold {threshold}: pass a positive number of nats")
    if metric not in metric_names(dataset):
        raise unknown_name("metric", metric, metric_names(dataset), listing="the store's metric coordinate lists them")

    final = final_values(dataset)["value"].sel(metric=metric).values
    # NaN < threshold is False, which is the rule for diverged cells.
    below = np.asarray(final < threshold, dtype=bool)

    first = len(below)
    while first > 0 and below[first - 1]:
        first -= 1
    if first == len(below):
        return None
    return int(dataset.t0.values[first])


def status_counts(dataset: xr.Dataset) -> dict[int, dict[str, int]]:
    """Count, for each t0, the cells with t1 >= t0 in each status, over seeds too.

    Cells with t1 < t0 are never measured, so they are left out of the counts.
    """
    status = dataset["status"].where(dataset.t1 >= dataset.t0)
    return {
        int(t0): {meaning: int((status.sel(t0=t0) == code).sum()) for code, meaning in enumerate(STATUS_MEANINGS)}
        for t0 in dataset.t0.values
    }


def transition_attrs(dataset: xr.Dataset, threshold: float) -> dict[str, float | int]:
    """Return the attrs that record the transition step (-1 for none) at `threshold`."""
    if DEFAULT_TRANSITION_METRIC not in metric_names(dataset):
        return {"transition_step": -1, "transition_threshold": float(threshold)}
    step = transition_step(dataset, threshold)
    return {"transition_step": -1 if step is None else int(step), "transition_threshold": float(threshold)}
