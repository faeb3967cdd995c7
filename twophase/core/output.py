"""The output folder of a training run or experiment, and a training run's curve store.

Layout of a `twophase train` folder `OUT/` (experiments add `results.zarr`, `states/`,
`kernels/`, `run/` and `figures/`):

- `config.toml`: the resolved config; `twophase train --config OUT/config.toml` reruns it.
- `run.json`: the resolved plan (steps per epoch, total steps, checkpoint steps,
  milestones), package versions, device, determinism setting, creation time.
- `checkpoints/step-NNNNNNNNN.safetensors`: the training state at each checkpoint.
- `resume/step-NNNNNNNNN.safetensors`: states saved only to resume after an interrupt.
- `curves.zarr`: `train_loss(step)`, `train_accuracy(step)`, `learning_rate(step)`,
  `batch_fingerprint(step)`, `test_loss(checkpoint)`, `test_accuracy(checkpoint)`.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import fcntl
import json
import logging
import os
import platform
import shutil
import warnings
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import xarray as xr
import zarr

from twophase import __version__
from twophase.core.config import RunConfig, config_from_dict, read_toml, without_write_locations
from twophase.core.errors import ConfigError, OutputError, StateError
from twophase.core.run import RunPlan
from twophase.core.state import TrainingState, is_readable_state, state_file_name, step_of_state_file
from twophase.core.store import create_store, write_region

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.toml"
INFO_FILE = "run.json"
CHECKPOINT_FOLDER = "checkpoints"
RESUME_FOLDER = "resume"
CURVES_STORE = "curves.zarr"
LOCK_FILE = ".lock"
STATES_FOLDER = "states"
RUN_FOLDER = "run"
KERNEL_FOLDER = "kernels"
RESULTS_STORE = "results.zarr"
FIGURES_FOLDER = "figures"
_OWNED = (
    CONFIG_FILE, INFO_FILE, CHECKPOINT_FOLDER, RESUME_FOLDER, CURVES_STORE, STATES_FOLDER, RESULTS_STORE, FIGURES_FOLDER,
    RUN_FOLDER, KERNEL_FOLDER,
)

# Settings that may differ between a run and its resumption without changing results
# on the same hardware: a data folder may move. A change of device or data folder is
# logged.
_RESUME_INDEPENDENT = {("train", "device"), ("data", "data_dir"), ("data", "cache_dir"), ("data", "download")}


def package_versions() -> dict[str, str]:
    """Return the versions of the packages that determine a run's numbers.

    Read from the installed metadata, so that timm and torchvision are not imported
    only to learn their versions.
    """
    versions = {"twophase": __version__, "python": platform.python_version()}
    for package in ("torch", "torchvision", "timm", "numpy", "xarray", "zarr"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file so that a crash leaves either the old or the new content."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


class RunDirectory:
    """The output folder of one training run or experiment.

    `kind` is `train`, `chaos` or `cone`, recorded in run.json; `config_type` reads the
    saved config back.
    """

    def __init__(self, path: str | Path, kind: str = "train", config_type: type[RunConfig] = RunConfig) -> None:
        self.path = Path(path)
        self.kind = kind
        self.config_type = config_type
        self._lock_handle: TextIO | None = None

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def info_path(self) -> Path:
        return self.path / INFO_FILE

    @property
    def curves_path(self) -> Path:
        return self.path / CURVES_STORE

    def checkpoint_path(self, step: int) -> Path:
        return self.path / CHECKPOINT_FOLDER / state_file_name(step)

    def resume_path(self, step: int) -> Path:
        return self.path / RESUME_FOLDER / state_file_name(step)

    def prepare(self, config: RunConfig, plan: RunPlan, deterministic: bool, overwrite: bool) -> bool:
        """Create the folder for a new run or check the existing one; return True if the run exists.

        Takes the folder's lock first; `release` gives it back. Raises OutputError when
        the path is a file, is not writable, is in use by another process, contains
        something other than a twophase run, or contains a run with another config. With
        `overwrite`, the earlier run's files are deleted first instead.
        """
        if self.path.exists() and not self.path.is_dir():
            raise OutputError(f"output path {str(self.path)!r} is a file; choose a folder with --out")
        foreign = sorted(entry.name for entry in self._entries() if not _is_owned(entry.name))
        if foreign:
            raise OutputError(
                f"output folder {str(self.path)!r} contains files that are not a twophase run "
                f"({', '.join(foreign[:3])}); choose an empty or new folder with --out"
            )

        self._lock()
        existing = self.info_path.is_file() and self.config_path.is_file()
        if existing and overwrite:
            self._remove_owned()
            existing = False
        elif existing:
            self._check_same_run(config, plan)
        elif any(entry.name != LOCK_FILE for entry in self._entries()):
            # run.json is written last, so without it the previous start stopped before
            # its first step and nothing in the folder is worth keeping.
            logger.info("%s contains an unfinished start; starting over", self.path)
            self._remove_owned()

        if not existing:
            info = {
                "kind": self.kind,
                "plan": asdict(plan),
                "deterministic": deterministic,
                "versions": package_versions(),
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            }
            # Saved so that `--config OUT/config.toml` reruns it, which refuses write locations.
            write_text_atomic(self.config_path, without_write_locations(config).to_toml())
            write_text_atomic(self.info_path, json.dumps(info, indent=2) + "\n")
        return existing

    def release(self) -> None:
        """Give back the folder's lock."""
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None

    def _lock(self) -> None:
        """Hold an exclusive lock on the folder, so that two processes never write one run.

        The operating system releases the lock when the process ends, killed or not.
        """
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            handle = open(self.path / LOCK_FILE, "a+")
        except OSError as error:
            raise OutputError(f"output folder {str(self.path)!r} is not writable ({error.strerror or error}); choose another --out") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise OutputError(
                f"output folder {str(self.path)!r} is in use by another twophase process; "
                "wait for it to finish or choose another --out"
            ) from None
        self._lock_handle = handle

    def _entries(self) -> list[os.DirEntry[str]]:
        if not self.path.is_dir():
            return []
        with os.scandir(self.path) as entries:
            return list(entries)

    def read_config(self) -> RunConfig:
        """Read the run's saved config."""
        try:
            return config_from_dict(read_toml(self.config_path), source=str(self.config_path), kind=self.config_type)
        except ConfigError as error:
            raise OutputError(f"run folder {str(self.path)!r} has an unreadable config: {error}") from None

    def read_info(self) -> dict[str, Any]:
        """Read run.json."""
        try:
            info = json.loads(self.info_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise OutputError(f"run folder {str(self.path)!r} has a damaged {INFO_FILE}: {error}") from None
        if not isinstance(info, dict):
            raise OutputError(f"run folder {str(self.path)!r} has a damaged {INFO_FILE}: not a JSON object")
        return info

    def read_plan(self) -> RunPlan:
        """Read the run's resolved plan from run.json."""
        try:
            plan = self.read_info()["plan"]
            return RunPlan(**{**plan, "checkpoints": tuple(plan["checkpoints"]), "milestones": tuple(plan["milestones"])})
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise OutputError(f"run folder {str(self.path)!r} has a damaged {INFO_FILE}: {error}") from None

    def saved_steps(self, folder: str = CHECKPOINT_FOLDER) -> list[int]:
        """Return the steps of the states saved in `folder`, increasing."""
        directory = self.path / folder
        if not directory.is_dir():
            return []
        steps = (step_of_state_file(path) for path in directory.iterdir())
        return sorted(step for step in steps if step is not None)

    def latest_state(self, device: Any, before: int | None = None) -> TrainingState | None:
        """Load the latest readable state among checkpoints and resume states, earlier than step `before` if given."""
        candidates = [(step, self.checkpoint_path(step)) for step in self.saved_steps(CHECKPOINT_FOLDER)]
        candidates += [(step, self.resume_path(step)) for step in self.saved_steps(RESUME_FOLDER)]
        if before is not None:
            candidates = [(step, path) for step, path in candidates if step < before]
        for step, path in sorted(candidates, reverse=True):
            try:
                return TrainingState.load(path, device=device)
            except StateError as error:
                logger.warning("skipping damaged state at step %d: %s", step, error)
        return None

    def unreadable_checkpoints(self, steps: Iterable[int]) -> list[int]:
        """Return the steps among `steps` whose checkpoint file is missing or damaged."""
        return [step for step in steps if not is_readable_state(self.checkpoint_path(step))]

    def remove_resume_states(self) -> None:
        """Delete the states saved only for resuming, once the run is complete."""
        shutil.rmtree(self.path / RESUME_FOLDER, ignore_errors=True)

    def _check_same_run(self, config: RunConfig, plan: RunPlan) -> None:
        saved_kind = self.read_info().get("kind")
        if saved_kind != self.kind:
            raise OutputError(
                f"output folder {str(self.path)!r} contains a {saved_kind} run, not a {self.kind} run; "
                "choose another --out"
            )
        saved = self.read_config()
        differences = _differences(saved.to_dict(), config.to_dict())
        if differences:
            first_differences = "; ".join(f"{key}: {old!r} saved, {new!r} now" for key, old, new in differences[:3])
            more = f" and {len(differences) - 3} more" if len(differences) > 3 else ""
            raise OutputError(
                f"output folder {str(self.path)!r} contains a run with another config ({first_differences}{more}); "
                "pass --overwrite to replace it or choose another --out"
            )
        saved_plan = self.read_plan()
        if (saved_plan.total_steps, saved_plan.checkpoints) != (plan.total_steps, plan.checkpoints):
            raise OutputError(
                f"output folder {str(self.path)!r} contains a run planned for {saved_plan.total_steps} steps, "
                f"now {plan.total_steps}: the data set has changed; pass --overwrite or choose another --out"
            )
        if saved.train.device != config.train.device:
            logger.warning("resuming on device %s; the run started on %s", config.train.device, saved.train.device)
        if saved.data.data_dir != config.data.data_dir:
            logger.warning("resuming with data from %s; the run started with %s", config.data.data_dir, saved.data.data_dir)

    def _remove_owned(self) -> None:
        logger.info("removing the earlier run in %s", self.path)
        for entry in self._entries():
            if entry.name == LOCK_FILE or not _is_owned(entry.name):
                continue
            target = Path(entry.path)
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink()


def _is_owned(name: str) -> bool:
    """Return True for the names a run folder may contain, temporary files of atomic writes included."""
    return name in _OWNED or name == LOCK_FILE or (name.endswith(".tmp") and name[: -len(".tmp")] in _OWNED)


def _differences(saved: dict[str, Any], current: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    result = []
    for section in sorted(set(saved) | set(current)):
        keys = set(saved.get(section, {})) | set(current.get(section, {}))
        for key in sorted(keys):
            if (section, key) in _RESUME_INDEPENDENT:
                continue
            old = saved.get(section, {}).get(key)
            new = current.get(section, {}).get(key)
            if old != new:
                result.append((f"{section}.{key}", old, new))
    return result


class CurveStore:
    """The point-wise curves of a run in Zarr, written region by region.

    The layout (every step and checkpoint, filled with NaN) is written first. Each
    flush fills the rows finished since the last one, so a crash loses only rows that
    the next run recomputes anyway.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def create(self, plan: RunPlan, config: RunConfig) -> None:
        steps = np.arange(plan.total_steps + 1)
        checkpoints = np.asarray(plan.checkpoints, dtype=np.int64)
        empty_steps = np.full(steps.shape, np.nan)
        empty_checkpoints = np.full(checkpoints.shape, np.nan)
        dataset = xr.Dataset(
            {
                "train_loss": ("step", empty_steps, _attrs("training loss of the step's batch, before the update", "nats")),
                "train_accuracy": ("step", empty_steps.copy(), _attrs("training accuracy of the step's batch, before the update", "1")),
                "learning_rate": ("step", empty_steps.copy(), _attrs("learning rate of the step's update", "1")),
                "batch_fingerprint": ("step", np.zeros(steps.shape, dtype=np.uint64), _attrs("hash of the step's batch indices and augmentation (0: not run)", "1")),
                "test_loss": ("checkpoint", empty_checkpoints, _attrs("test loss", "nats")),
                "test_accuracy": ("checkpoint", empty_checkpoints.copy(), _attrs("test accuracy", "1")),
            },
            coords={
                "step": ("step", steps, {"long_name": "optimizer steps completed"}),
                "checkpoint": ("checkpoint", checkpoints, {"long_name": "checkpoint step"}),
            },
            attrs={
                "steps_per_epoch": plan.steps_per_epoch,
                "total_steps": plan.total_steps,
                "config": json.dumps(config.to_dict()),
            },
        )
        create_store(dataset, self.path)

    def write_steps(self, first: int, losses: list[float], accuracies: list[float], learning_rates: list[float], fingerprints: list[str]) -> None:
        """Write the rows of steps first, first + 1, ... (steps completed, from 1)."""
        if not losses:
            return
        region = {"step": slice(first, first + len(losses))}
        rows = xr.Dataset(
            {
                "train_loss": ("step", np.asarray(losses, dtype=np.float64)),
                "train_accuracy": ("step", np.asarray(accuracies, dtype=np.float64)),
                "learning_rate": ("step", np.asarray(learning_rates, dtype=np.float64)),
                "batch_fingerprint": ("step", np.asarray([int(f, 16) for f in fingerprints], dtype=np.uint64)),
            }
        )
        write_region(rows, self.path, region)

    def write_checkpoint(self, index: int, test_loss: float, test_accuracy: float) -> None:
        rows = xr.Dataset(
            {
                "test_loss": ("checkpoint", np.asarray([test_loss])),
                "test_accuracy": ("checkpoint", np.asarray([test_accuracy])),
            }
        )
        write_region(rows, self.path, {"checkpoint": slice(index, index + 1)})

    def consolidate(self) -> None:
        """Consolidate the store's metadata once the run is complete."""
        with warnings.catch_warnings():
            # zarr 3.1 warns that consolidated metadata is not in the format 3 spec yet.
            # xarray reads it, and falls back to the plain metadata when it is absent.
            warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
            zarr.consolidate_metadata(str(self.path))

    def open(self) -> xr.Dataset:
        """Open the store lazily with xarray."""
        return xr.open_zarr(self.path, consolidated=False)


def _attrs(long_name: str, units: str) -> dict[str, str]:
    return {"long_name": long_name, "units": units}
