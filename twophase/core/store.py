"""The result store `OUT/results.zarr`: labeled arrays indexed by (t0, t1, metric).

The whole layout is written first, filled with NaN and `pending`; each finished t1
column is then written into its region, status last. A killed run therefore loses at
most the column in progress, and a rerun resumes from `status`. Region writes skip
the consolidated metadata, which is written once when the experiment ends.

zarr writes each file under a temporary name and renames it, so a kill never leaves
half a chunk. Every chunk is written, even one that holds only the fill value, and
each carries a checksum: `find_damage` can then tell a deleted or truncated file from
a cell that was never measured.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr
from zarr.codecs import ZstdCodec

from twophase.core.errors import OutputError
from twophase.core.specs import MetricSpec

logger = logging.getLogger(__name__)

PENDING, DONE, DIVERGED, FAILED = 0, 1, 2, 3
# Store attr set when the parent's loss became NaN or infinite: "seed S, step N".
PARENT_DIVERGED_ATTR = "parent_diverged"
STATUS_ATTRS = {
    "long_name": "status of the cell",
    "units": "1",
    "flag_values": [PENDING, DONE, DIVERGED, FAILED],
    "flag_meanings": "pending done diverged failed",
}


# By default zarr skips a chunk that holds only the fill value and deletes one that
# becomes so. A missing chunk would then look the same as a deleted file.
WRITE_OPTIONS: dict[str, Any] = {"consolidated": False, "write_empty_chunks": True}
CHECKSUMMED = ZstdCodec(level=3, checksum=True)
# Store attr with the names of every array written at creation, so that a deleted array is found.
ARRAY_NAMES_ATTR = "array_names"


def create_store(dataset: xr.Dataset, path: Path) -> None:
    """Write `dataset` as a new Zarr store at `path`, every chunk checksummed.

    The store is written under `path` + `.tmp` and renamed when complete, so a kill
    during creation leaves no store rather than one that lacks arrays.
    """
    encoding = {name: {"compressors": [CHECKSUMMED]} for name in dataset.variables}
    dataset = dataset.assign_attrs({ARRAY_NAMES_ATTR: sorted(str(name) for name in dataset.variables)})
    temporary = path.with_name(path.name + ".tmp")
    for stale in (temporary, path):
        if stale.exists():
            shutil.rmtree(stale)
    dataset.to_zarr(temporary, mode="w", zarr_format=3, encoding=encoding, **WRITE_OPTIONS)
    os.replace(temporary, path)


def write_region(dataset: xr.Dataset, path: Path, region: Mapping[str, slice] | None = None) -> None:
    """Write the arrays of `dataset` into an existing store, into `region` or whole."""
    if region is None:
        dataset.to_zarr(path, mode="r+", **WRITE_OPTIONS)
    else:
        dataset.to_zarr(path, region=dict(region), mode="r+", **WRITE_OPTIONS)


def find_damage(path: Path) -> list[str]:
    """Describe every damaged part of the Zarr store at `path`; an empty list means intact.

    Reads every array in full, so it finds metadata that does not parse, chunk files
    that were deleted, chunks that were truncated or changed (their checksum fails), and
    arrays whose whole folder is gone.
    """
    if not (path / "zarr.json").is_file():
        return [f"its metadata file {path / 'zarr.json'} is missing"]
    try:
        expected = zarr.open_group(str(path), mode="r").attrs.get(ARRAY_NAMES_ATTR, [])
    except Exception as error:  # noqa: BLE001 - any parse failure means damage
        return [f"its metadata file {path / 'zarr.json'} is unreadable ({type(error).__name__})"]
    damage = [f"array {name} is missing" for name in expected if not (path / name).is_dir()]
    for folder in sorted(child for child in path.iterdir() if child.is_dir()):
        name = folder.name
        if not (folder / "zarr.json").is_file():
            damage.append(f"array {name} has no metadata file")
            continue
        try:
            array = zarr.open_array(store=str(path), path=name, mode="r")
        except Exception as error:  # noqa: BLE001 - any parse failure means damage
            damage.append(f"array {name} has unreadable metadata ({type(error).__name__})")
            continue
        missing = array.nchunks - array.nchunks_initialized
        if missing:
            damage.append(f"array {name} lacks {missing} of its {array.nchunks} chunk file(s)")
            continue
        try:
            array[...]
        except Exception as error:  # noqa: BLE001 - codecs raise RuntimeError, ValueError and others
            damage.append(f"array {name} has a corrupt chunk ({error})")
    return damage


def require_intact(path: Path, name: str, fix: str) -> None:
    """Raise OutputError naming every damaged array of the store at `path`, with `fix` as the advice."""
    damage = find_damage(path)
    if damage:
        raise OutputError(f"{name} is damaged: {'; '.join(damage)}; {fix}")


@dataclass(frozen=True)
class ChaosLayout:
    """The coordinates of a chaos store."""

    seeds: tuple[int, ...] | None
    t0: tuple[int, ...]
    t1: tuple[int, ...]
    metrics: tuple[MetricSpec, ...]
    alphas: np.ndarray
    total_steps: int

    @property
    def metric_names(self) -> list[str]:
        return [metric.name for metric in self.metrics]


@dataclass(frozen=True)
class ConeLayout:
    """The coordinates of a cone store: every checkpoint is both a tau (t0) and a t (t1)."""

    steps: tuple[int, ...]
    metrics: tuple[MetricSpec, ...]
    dts: tuple[int, ...]
    total_steps: int


class ResultStore:
    """Create, fill and read a result store with xarray."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.has_seed = False

    def create_chaos(self, layout: ChaosLayout, attrs: Mapping[str, Any]) -> None:
        """Write the whole chaos layout, every value NaN and every status pending."""
        seed = ["seed"] if layout.seeds is not None else []
        seed_size = [len(layout.seeds)] if layout.seeds is not None else []
        shape_t0_t1 = (*seed_size, len(layout.t0), len(layout.t1))
        metrics = len(layout.metrics)

        def empty(*shape: int) -> np.ndarray:
            return np.full(shape, np.nan)

        variables = {
            "values": ([*seed, "t0", "t1", "metric"], empty(*shape_t0_t1, metrics), _attrs("measured values", "see metric_units")),
            "status": ([*seed, "t0", "t1"], np.full(shape_t0_t1, PENDING, dtype=np.int8), STATUS_ATTRS),
            "barrier_curve": ([*seed, "t0", "t1", "alpha"], empty(*shape_t0_t1, len(layout.alphas)), _attrs("test loss of alpha * parent + (1 - alpha) * twin", "nats")),
            "error_curve": ([*seed, "t0", "t1", "alpha"], empty(*shape_t0_t1, len(layout.alphas)), _attrs("test error of alpha * parent + (1 - alpha) * twin", "1")),
            "control": ([*seed, "t1", "metric"], empty(*seed_size, len(layout.t1), metrics), _attrs("values of the control twin, perturbed by zero", "see metric_units")),
            "requested_norm": ([*seed, "t0"], empty(*seed_size, len(layout.t0)), _attrs("requested perturbation norm", "1")),
            "perturbation_norm": ([*seed, "t0"], empty(*seed_size, len(layout.t0)), _attrs("realized perturbation norm |theta' - theta| after float32 rounding", "1")),
            "changed_fraction": ([*seed, "t0"], empty(*seed_size, len(layout.t0)), _attrs("fraction of perturbed coordinates whose float32 value changed", "1")),
            "train_loss": ([*seed, "step"], empty(*seed_size, layout.total_steps + 1), _attrs("parent training loss of the step's batch", "nats")),
            "test_loss": ([*seed, "t1"], empty(*seed_size, len(layout.t1)), _attrs("parent test loss", "nats")),
            "test_accuracy": ([*seed, "t1"], empty(*seed_size, len(layout.t1)), _attrs("parent test accuracy", "1")),
        }
        coords: dict[str, Any] = {
            "t0": ("t0", np.asarray(layout.t0, dtype=np.int64), _attrs("perturbation step", "steps")),
            "t1": ("t1", np.asarray(layout.t1, dtype=np.int64), _attrs("measurement step", "steps")),
            "metric": ("metric", _strings(layout.metric_names), {"long_name": "metric"}),
            "metric_long_name": ("metric", _strings([m.long_name for m in layout.metrics])),
            "metric_units": ("metric", _strings([m.units for m in layout.metrics])),
            "alpha": ("alpha", np.asarray(layout.alphas, dtype=np.float64), _attrs("interpolation weight of the parent", "1")),
            "step": ("step", np.arange(layout.total_steps + 1, dtype=np.int64), _attrs("optimizer steps completed", "steps")),
        }
        if layout.seeds is not None:
            coords["seed"] = ("seed", np.asarray(layout.seeds, dtype=np.int64), {"long_name": "replicate seed"})
        create_store(xr.Dataset(variables, coords=coords, attrs=_json_safe(attrs)), self.path)
        self.has_seed = layout.seeds is not None

    def create_cone(self, layout: ConeLayout, attrs: Mapping[str, Any]) -> None:
        """Write the whole cone layout, every value NaN and every status pending."""
        count, metrics = len(layout.steps), len(layout.metrics)

        def empty(*shape: int) -> np.ndarray:
            return np.full(shape, np.nan)

        steps = np.asarray(layout.steps, dtype=np.int64)
        variables = {
            "values": (["t0", "t1", "metric"], empty(count, count, metrics), _attrs("measured values between the states at tau (t0) and t (t1)", "see metric_units")),
            "status": (["t0", "t1"], np.full((count, count), PENDING, dtype=np.int8), STATUS_ATTRS),
            "kernel_norm": (["t1"], empty(count), _attrs("Frobenius norm of the eNTK", "1")),
            "cone_half_angle": (["t0"], empty(count), _attrs("largest angle between the eNTK at tau and any later eNTK", "degree")),
            "offset_distance": (["dt", "t1"], empty(len(layout.dts), count), _attrs("kernel distance S(t, t + dt)", "1")),
            "kernel_embedding": (["t1", "component"], empty(count, 2), _attrs("classical MDS of the angles between normalised eNTKs", "degree")),
            "train_loss": (["step"], empty(layout.total_steps + 1), _attrs("training loss of the step's batch", "nats")),
            "test_loss": (["t1"], empty(count), _attrs("test loss", "nats")),
            "test_accuracy": (["t1"], empty(count), _attrs("test accuracy", "1")),
        }
        coords: dict[str, Any] = {
            "t0": ("t0", steps, _attrs("reference step tau", "steps")),
            "t1": ("t1", steps.copy(), _attrs("compared step t", "steps")),
            "metric": ("metric", _strings([m.name for m in layout.metrics]), {"long_name": "metric"}),
            "metric_long_name": ("metric", _strings([m.long_name for m in layout.metrics])),
            "metric_units": ("metric", _strings([m.units for m in layout.metrics])),
            "dt": ("dt", np.asarray(layout.dts, dtype=np.int64), _attrs("offset of the compared step", "steps")),
            "component": ("component", np.arange(2, dtype=np.int64), {"long_name": "embedding component"}),
            "step": ("step", np.arange(layout.total_steps + 1, dtype=np.int64), _attrs("optimizer steps completed", "steps")),
        }
        create_store(xr.Dataset(variables, coords=coords, attrs=_json_safe(attrs)), self.path)
        self.has_seed = False

    def open(self) -> xr.Dataset:
        """Open the store lazily with xarray."""
        dataset = xr.open_zarr(self.path, consolidated=False)
        self.has_seed = "seed" in dataset.dims
        return dataset

    def write(self, seed_index: int, region: Mapping[str, slice], variables: Mapping[str, tuple[Sequence[str], np.ndarray]]) -> None:
        """Write arrays into a region; dimension names exclude `seed`, which is added here."""
        full_region = dict(region)
        data = {}
        for name, (dims, values) in variables.items():
            values = np.asarray(values)
            if self.has_seed:
                dims = ("seed", *dims)
                values = values[np.newaxis]
            data[name] = (tuple(dims), values)
        if self.has_seed:
            full_region["seed"] = slice(seed_index, seed_index + 1)
        write_region(xr.Dataset(data), self.path, full_region)

    def write_whole(self, variables: Mapping[str, tuple[Sequence[str], np.ndarray]]) -> None:
        """Overwrite whole arrays of the layout with new values of the same shape, `status` last."""
        data = {name: (tuple(dims), np.asarray(values)) for name, (dims, values) in variables.items()}
        status = data.pop("status", None)
        write_region(xr.Dataset(data), self.path)
        if status is not None:
            write_region(xr.Dataset({"status": status}), self.path)

    def set_attrs(self, attrs: Mapping[str, Any]) -> None:
        group = zarr.open_group(str(self.path), mode="r+")
        group.attrs.update(_json_safe(attrs))

    def consolidate(self) -> None:
        with warnings.catch_warnings():
            # zarr 3.1 warns that consolidated metadata is not in the format 3 spec yet.
            warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
            zarr.consolidate_metadata(str(self.path))


def _attrs(long_name: str, units: str) -> dict[str, str]:
    return {"long_name": long_name, "units": units}


def _strings(values: Sequence[str]) -> np.ndarray:
    # A NumPy fixed-width string array (<U12) makes zarr 3.1 warn that the dtype has no
    # Zarr format 3 specification; Python strings (object dtype) write without it.
    return np.asarray(list(values), dtype=object)


def _json_safe(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Convert NumPy scalars to Python ones, which zarr's JSON attributes require."""
    return json.loads(json.dumps(dict(attrs), default=lambda value: value.item() if hasattr(value, "item") else str(value)))
