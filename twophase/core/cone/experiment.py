"""The cone experiment: the eNTK of every checkpoint, compared over all pairs of checkpoints.

The states come from a training run: one trained here into `OUT/run`, or a finished
`twophase train` run given as `cone.from_run`. Each checkpoint's kernel is computed
once and saved under `OUT/kernels`, so a rerun after a crash computes only the kernels
that are missing. The pairs are cheap once the kernels exist and are all recomputed.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from twophase.core.analysis import check_store
from twophase.core.cone.config import ConeConfig
from twophase.core.cone.views import angles_degrees, classical_mds, cone_half_angles, offset_distances
from twophase.core.config import RunConfig
from twophase.core.errors import OutputError, PluginError, TrainingInterrupted, UsageError
from twophase.core.measure import KernelSource, MeasurementContext, MeasureSettings, StateEvaluator
from twophase.core.output import CURVES_STORE, KERNEL_FOLDER, RESULTS_STORE, RUN_FOLDER, RunDirectory, package_versions
from twophase.core.plugins import Hooks, create_hooks
from twophase.core.run import build_model
from twophase.core.specs import MetricSpec
from twophase.core.state import TrainingState, state_file_name
from twophase.core.steps import Step
from twophase.core.store import DONE, ConeLayout, ResultStore, require_intact
from twophase.core.training import PreparedRun, prepare_run, signals_interrupt, train

logger = logging.getLogger(__name__)

KERNEL_SUMMARY = "kernel"

# Settings of the source run that may differ from the cone config without changing
# its states.
_INDEPENDENT = {("train", "device"), ("data", "data_dir"), ("data", "cache_dir"), ("data", "download")}


@dataclass(frozen=True)
class ConeResult:
    """Summary of one `run_cone` call."""

    out: Path
    store: Path
    seconds: float
    kernels_computed: int


def run_cone(config: ConeConfig, out: str | Path, *, hooks: Hooks | None = None, overwrite: bool = False) -> ConeResult:
    """Run a cone experiment into `out`, training the states first unless `cone.from_run` names them."""
    started = time.perf_counter()
    hooks = hooks or create_hooks()
    metrics = hooks.registry.metrics_for(config.cone.metrics, "cone")
    directory = RunDirectory(out, kind="cone", config_type=ConeConfig)
    source = Path(config.cone.from_run).expanduser().resolve() if config.cone.from_run else None
    if source is not None:
        check_source_run(source, config)

    prepared = prepare_run(config, hooks)
    config = prepared.config
    plan = prepared.plan
    dts = tuple(Step.parse(dt).resolve(plan.steps_per_epoch, plan.total_steps) for dt in config.cone.dts)
    if source is None:
        steps = _with_offsets(plan.checkpoints, dts, plan.total_steps)
    else:
        steps = tuple(RunDirectory(source).saved_steps())
        for dt in dts:
            if not any(step + dt in steps for step in steps):
                logger.warning("no two checkpoints of %s are dt = %d steps apart, so S(t, t + dt) stays empty", source, dt)
    model = build_model(hooks.registry, config, prepared.data, prepared.device)
    kernels = KernelSource(model, prepared.stream.data, prepared.stream.normalise, config.ntk)
    logger.info(
        "eNTK: %s kernel of %d samples in %d chunk(s), about %.0f MiB at peak",
        kernels.plan.kind, kernels.plan.samples, kernels.plan.chunks, kernels.plan.peak_bytes / 2**20,
    )

    store = ResultStore(directory.path / RESULTS_STORE)
    try:
        directory.prepare(config, dataclasses.replace(plan, checkpoints=steps), config.train.deterministic, overwrite)
        run_folder = source or directory.path / RUN_FOLDER
        if source is None:
            explicit = dataclasses.replace(config.train, checkpoints=",".join(str(step) for step in steps))
            train(_run_config(dataclasses.replace(config, train=explicit)), run_folder, hooks=hooks)

        if not _usable(store):
            layout = ConeLayout(steps=steps, metrics=metrics, dts=dts, total_steps=plan.total_steps)
            store.create_cone(layout, _store_attrs(config, prepared, kernels, source))
        context = _context(config, prepared, model, kernels, metrics)
        states = [_load_state(run_folder, step, prepared.device) for step in steps]
        try:
            with signals_interrupt():
                _kernels(states, context, directory.path / KERNEL_FOLDER, config)
                _compare_pairs(states, hooks, context, metrics, store, steps, dts, run_folder)
        except KeyboardInterrupt:
            saved = len(list((directory.path / KERNEL_FOLDER).glob("*.safetensors")))
            raise TrainingInterrupted(
                f"interrupted with {saved} of {len(states)} eNTKs saved in {str(directory.path / KERNEL_FOLDER)!r}; "
                "rerun the same command to resume"
            ) from None
        # Counted by the context's cache, so a kernel computed again for a pair would show.
        computed = context.computations.get(KERNEL_SUMMARY, 0)
        store.consolidate()
    finally:
        directory.release()

    seconds = time.perf_counter() - started
    logger.info("cone experiment in %s finished in %.1f s; %d eNTK(s) computed", directory.path, seconds, computed)
    return ConeResult(out=directory.path, store=store.path, seconds=seconds, kernels_computed=computed)


def _usable(store: ResultStore) -> bool:
    """Return True when the store exists and is intact; warn when it is damaged.

    Every value of a cone store is derived from the saved states and eNTKs, so a damaged
    store is written again rather than refused.
    """
    if not store.path.exists():
        return False
    name = f"results store {str(store.path)!r}"
    try:
        require_intact(store.path, name, "writing it again from the saved states and eNTKs")
        check_store(store.open(), name=name)
    except OutputError as error:
        logger.warning("%s", error)
        return False
    return True


def check_source_folder(folder: Path) -> RunDirectory:
    """Check that `folder` is the output folder of a `twophase train` run; return it."""
    if not folder.is_dir():
        raise UsageError(f"run folder {str(folder)!r} given as --from not found; pass the --out folder of a `twophase train` run")
    directory = RunDirectory(folder)
    if not directory.info_path.is_file():
        raise UsageError(
            f"{str(folder)!r} given as --from is not a `twophase train` run folder (no run.json); "
            "pass the --out folder of a `twophase train` run"
        )
    kind = directory.read_info().get("kind")
    if kind != "train":
        raise UsageError(f"{str(folder)!r} given as --from contains a {kind} run; pass a `twophase train` run")
    return directory


def check_source_run(folder: Path, config: ConeConfig) -> None:
    """Check that `folder` is a finished `twophase train` run with the config's model and data."""
    directory = check_source_folder(folder)
    saved = directory.read_config()
    differences = [
        f"{section}.{key}: {value!r} in the run, {getattr(getattr(config, section), key)!r} here"
        for section, table in saved.to_dict().items()
        for key, value in table.items()
        if (section, key) not in _INDEPENDENT and getattr(getattr(config, section), key) != getattr(getattr(saved, section), key)
    ]
    if differences:
        raise UsageError(
            f"run {str(folder)!r} given as --from was trained with another config ({'; '.join(differences[:3])}); "
            "leave those options out or pass a matching run"
        )
    plan = directory.read_plan()
    rerun = f"twophase train --config {folder / 'config.toml'} --out {folder}"
    missing = directory.unreadable_checkpoints(plan.checkpoints)
    if missing:
        raise UsageError(
            f"run {str(folder)!r} given as --from is incomplete: checkpoint(s) {missing[:5]} of {len(plan.checkpoints)} "
            f"are missing or damaged; finish or repair it with `{rerun}`"
        )
    require_intact(
        folder / CURVES_STORE, f"curves store of the run {str(folder)!r} given as --from",
        f"train the run again with `{rerun} --overwrite`",
    )


def _with_offsets(checkpoints: tuple[int, ...], dts: tuple[int, ...], total: int) -> tuple[int, ...]:
    """Add the step t + dt for every checkpoint t and offset dt that lies within training."""
    steps = set(checkpoints)
    steps.update(step + dt for step in checkpoints for dt in dts if step + dt <= total)
    return tuple(sorted(steps))


def _run_config(config: ConeConfig) -> RunConfig:
    """Return the training part of a cone config as a plain RunConfig."""
    return RunConfig(model=config.model, data=config.data, optimizer=config.optimizer, train=config.train)


def _context(
    config: ConeConfig, prepared: PreparedRun, model: torch.nn.Module, kernels: KernelSource, metrics: tuple[MetricSpec, ...]
) -> MeasurementContext:
    settings = MeasureSettings(bn_batches=0, eval_batch_size=config.train.eval_batch_size, seed=config.train.data_seed)
    evaluator = StateEvaluator(model, prepared.stream.data, prepared.stream.normalise, settings)
    return MeasurementContext(
        requested=tuple(metric.name for metric in metrics),
        experiment="cone",
        evaluator=evaluator,
        alphas=np.array([0.0, 1.0]),
        kernels=kernels,
    )


def _load_state(run_folder: Path, step: int, device: torch.device) -> TrainingState:
    state = TrainingState.load(run_folder / "checkpoints" / state_file_name(step), device=device)
    state.metadata["run"] = "cone"
    # Momentum buffers are not compared; dropping them halves the memory of the states.
    state.optimizer = {"state": {}, "param_groups": []}
    return state


def _kernels(states: list[TrainingState], context: MeasurementContext, folder: Path, config: ConeConfig) -> None:
    """Fill the context's kernel cache from saved kernels, computing and saving the missing ones."""
    from safetensors.torch import load_file, save_file

    identity = {"kind": config.ntk.kind, "samples": str(config.ntk.samples), "seed": str(config.ntk.seed)}
    folder.mkdir(parents=True, exist_ok=True)
    for state in states:
        path = folder / state_file_name(state.step)
        if path.is_file() and _kernel_identity(path) == identity:
            kernel = load_file(str(path), device=str(context.kernels.inputs.device))["kernel"]
            context.store_summary(state, KERNEL_SUMMARY, kernel)
            continue
        started = time.perf_counter()
        kernel = context.kernel(state)
        temporary = path.with_name(path.name + ".tmp")
        save_file({"kernel": kernel.contiguous()}, str(temporary), metadata=identity)
        temporary.replace(path)
        logger.info("eNTK at step %d: norm %.4g, %.1f s", state.step, float(kernel.norm()), time.perf_counter() - started)


def _kernel_identity(path: Path) -> dict[str, str] | None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError):
        return None


def _compare_pairs(
    states: list[TrainingState],
    hooks: Hooks,
    context: MeasurementContext,
    metrics: tuple[MetricSpec, ...],
    store: ResultStore,
    steps: tuple[int, ...],
    dts: tuple[int, ...],
    run_folder: Path,
) -> None:
    """Measure every pair once, mirror it, derive the views and write the whole store."""
    count, names = len(states), [metric.name for metric in metrics]
    values = np.full((count, count, len(names)), np.nan)
    for first in range(count):
        for second in range(first, count):
            context.begin_pair()
            merged = hooks.measure(a=states[first], b=states[second], context=context)
            unexpected = sorted(set(merged) - set(names))
            if unexpected:
                raise PluginError(f"a measure hook returned metric(s) {', '.join(unexpected)} that were not requested")
            row = [merged.get(name, np.nan) for name in names]
            values[first, second] = row
            values[second, first] = row

    step_array = np.asarray(steps)
    norms = np.array([float(context.kernel(state).norm()) for state in states])
    variables: dict[str, tuple[tuple[str, ...], np.ndarray]] = {
        "values": (("t0", "t1", "metric"), values),
        "status": (("t0", "t1"), np.full((count, count), DONE, dtype=np.int8)),
        "kernel_norm": (("t1",), norms),
    }
    if "kernel_distance" in names:
        distance = values[:, :, names.index("kernel_distance")]
        variables["cone_half_angle"] = (("t0",), cone_half_angles(step_array, distance))
        variables["kernel_embedding"] = (("t1", "component"), classical_mds(angles_degrees(distance)))
        offsets = np.stack([offset_distances(step_array, distance, dt) for dt in dts]) if dts else np.empty((0, count))
        variables["offset_distance"] = (("dt", "t1"), offsets)
    variables.update(_training_curves(run_folder, steps))
    store.write_whole(variables)


def _training_curves(run_folder: Path, steps: tuple[int, ...]) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
    """Copy the run's training loss per step and its test metrics at the checkpoints."""
    with xr.open_zarr(run_folder / CURVES_STORE, consolidated=False) as curves:
        test = curves[["test_loss", "test_accuracy"]].sel(checkpoint=list(steps)).load()
        return {
            "train_loss": (("step",), curves.train_loss.values),
            "test_loss": (("t1",), test.test_loss.values),
            "test_accuracy": (("t1",), test.test_accuracy.values),
        }


def _store_attrs(config: ConeConfig, prepared: PreparedRun, kernels: KernelSource, source: Path | None) -> dict[str, object]:
    return {
        "experiment": "cone",
        "config": json.dumps(config.to_dict()),
        "versions": json.dumps(package_versions()),
        "device": str(prepared.device),
        "deterministic": config.train.deterministic,
        "steps_per_epoch": prepared.plan.steps_per_epoch,
        "total_steps": prepared.plan.total_steps,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "ntk_kind": config.ntk.kind,
        "ntk_samples": config.ntk.samples,
        "ntk_seed": config.ntk.seed,
        "ntk_indices": json.dumps(kernels.indices.cpu().tolist()),
        "source_run": str(source) if source else "",
    }

