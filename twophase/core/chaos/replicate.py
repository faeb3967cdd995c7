"""One replicate of the chaos experiment: a parent and its twins in lockstep.

At each step of the t0 grid a twin branches from a full copy of the parent's training
state and gets a perturbation. Parent and twins then take every step on the same
batch tensor. At each step of the t1 grid every twin with t0 <= t1 is compared with
the parent and the column is written to the store.

Resume: at each t1 column the members' states are saved first, then the column's
values, then its status, which commits the column. A rerun restarts from the latest
committed column whose states exist, so no finished cell is computed twice. SIGINT
or SIGTERM instead saves every member at the next step and stops. A rerun continues
from that snapshot when it is newer than the latest committed column.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from twophase.core.chaos.config import ChaosConfig
from twophase.core.data import ImageData
from twophase.core.errors import PluginError, TrainingDivergedError, TrainingInterrupted
from twophase.core.measure import KernelSource, MeasurementContext, MeasureSettings, StateEvaluator
from twophase.core.output import write_text_atomic
from twophase.core.perturbation import PerturbationRequest, apply_perturbation, select_parameters
from twophase.core.plugins import Hooks
from twophase.core.run import Run, RunPlan, build_model, build_optimizer
from twophase.core.specs import MetricSpec
from twophase.core.state import TrainingState, state_file_name
from twophase.core.store import DIVERGED, DONE, PARENT_DIVERGED_ATTR, PENDING, ResultStore
from twophase.core.stream import DataStream, seeded_generator
from twophase.core.training import interrupt_flag

logger = logging.getLogger(__name__)

MEMBERS_FILE = "members.json"

# The metric that needs eNTK inputs in the measurement context.
KERNEL_METRIC = "kernel_distance"


@dataclass(frozen=True)
class ChaosPlan:
    """The resolved grids of a chaos experiment."""

    t0: tuple[int, ...]
    t1: tuple[int, ...]
    control_t0: int
    alphas: np.ndarray


def twin_name(t0: int) -> str:
    return f"twin-t0-{t0}"


CONTROL = "control"

PARENT = "parent"


class Replicate:
    """The parent, its twins and the control twin of one seed."""

    def __init__(
        self,
        *,
        config: ChaosConfig,
        plan: RunPlan,
        chaos_plan: ChaosPlan,
        metrics: tuple[MetricSpec, ...],
        data: ImageData,
        augmentation: str,
        device: torch.device,
        hooks: Hooks,
        store: ResultStore,
        folder: Path,
        seed_index: int,
    ) -> None:
        self.config = config
        self.plan = plan
        self.grids = chaos_plan
        self.metrics = metrics
        self.data = data
        self.device = device
        self.hooks = hooks
        self.store = store
        self.folder = folder
        self.seed_index = seed_index
        self.stream = DataStream(data, config.train.batch_size, config.train.data_seed, augmentation, device, config.train.channels_last)

        self.parent = self._new_run(PARENT, "parent")
        self.twins: dict[str, tuple[int, Run]] = {}
        self.diverged: dict[str, int] = {}
        self.rows_start = 1
        self.losses: list[float] = []
        self.context = self._new_context()

    def run(self) -> int:
        """Train and measure up to the last t1; return the number of steps taken."""
        start, grid_done = self._resume()
        last = self.grids.t1[-1]
        if start == last and grid_done:
            logger.info("replicate with seed %d is already complete", self.config.train.init_seed)
            return 0

        members = [self.parent, *(run for name, (_, run) in self.twins.items() if name not in self.diverged)]
        for member in members:
            self.hooks.on_run_start(run=member)
        step = start
        with interrupt_flag() as interrupted:
            while True:
                if interrupted.is_set() and step > start:
                    self._save_snapshot(step)
                    raise TrainingInterrupted(
                        f"interrupted at step {step} of {last} (seed {self.config.train.init_seed}); the states are "
                        f"saved in {str(self.folder)!r}, rerun the same command to resume"
                    )
                if not (grid_done and step == start):
                    self._at_grid_step(step)
                if step == last:
                    break
                self._train_step(step)
                step += 1

        for run in [self.parent, *(run for _, run in self.twins.values())]:
            if run.name not in self.diverged:
                self.hooks.on_run_end(run=run)
        return last - start

    def _train_step(self, step: int) -> None:
        batch = self.stream.batch(step)
        loss, _ = self.parent.train_on(batch)
        self.losses.append(loss)
        if not math.isfinite(loss):
            self._flush_losses()
            # Columns measured so far keep their `done` status, and this attr records why the rest stay pending.
            self.store.set_attrs({PARENT_DIVERGED_ATTR: f"seed {self.config.train.init_seed}, step {self.parent.step}"})
            raise TrainingDivergedError(
                f"the parent's training loss is {loss} at step {self.parent.step}; lower the learning rate "
                f"(now {self.parent.learning_rate():g}) and run again with --overwrite"
            )
        self.hooks.on_step(run=self.parent, step=self.parent.step, loss=loss)

        for name, (_, twin) in self.twins.items():
            if name in self.diverged:
                continue
            twin_loss, _ = twin.train_on(batch)
            if not math.isfinite(twin_loss):
                logger.warning("twin %s diverged at step %d (loss %s); the others continue", name, twin.step, twin_loss)
                self.diverged[name] = twin.step
                continue
            self.hooks.on_step(run=twin, step=twin.step, loss=twin_loss)

    def _at_grid_step(self, step: int) -> None:
        if step in self.grids.t0 and twin_name(step) not in self.twins:
            self._branch(step, twin_name(step), perturbed=True)
        if step == self.grids.control_t0 and CONTROL not in self.twins:
            self._branch(step, CONTROL, perturbed=False)
        if step in self.plan.checkpoints:
            self.parent.state().save(self.folder / PARENT / state_file_name(step))
        if step in self.grids.t1:
            self._measure_column(self.grids.t1.index(step))

    def _branch(self, step: int, name: str, perturbed: bool) -> None:
        """Copy the parent's whole training state into a new twin and perturb it."""
        state = self.parent.state()
        chaos = self.config.chaos
        request = PerturbationRequest(
            kind=chaos.perturbation if perturbed else "none",
            eps=chaos.eps if perturbed else 0.0,
            parameters=select_parameters(state.parameters, chaos.perturb_parameters),
            seed=chaos.perturbation_seed,
        )
        generator = seeded_generator(chaos.perturbation_seed, self.config.train.init_seed, step)
        delta = self.hooks.perturb(state=state, spec=request, generator=generator)
        if delta is None:
            raise PluginError(f"no plugin returned a perturbation of kind {request.kind!r} at t0 = {step}")
        record = apply_perturbation(state, delta, step)

        role = "twin" if perturbed else "control"
        twin = self._new_run(name, role)
        twin.load_state(state)
        self.twins[name] = (step, twin)
        self.hooks.on_run_start(run=twin)
        if perturbed:
            index = self.grids.t0.index(step)
            self.store.write(self.seed_index, {"t0": slice(index, index + 1)}, {
                "requested_norm": (("t0",), [record.requested_norm]),
                "perturbation_norm": (("t0",), [record.realized_norm]),
                "changed_fraction": (("t0",), [record.changed_fraction]),
            })
        logger.info(
            "branched %s at step %d: perturbation norm %.3g requested, %.3g realized",
            name, step, record.requested_norm, record.realized_norm,
        )

    def _measure_column(self, column: int) -> None:
        """Compare every twin with the parent at this t1, save states, then commit the column."""
        t1 = self.grids.t1[column]
        members = [self.parent] + [run for name, (_, run) in self.twins.items() if name not in self.diverged]
        states = {run.name: run.state() for run in members}
        for run in members:
            self.hooks.on_checkpoint(run=run, step=t1, state=states[run.name].clone())
        self._save_members(self._column_folder(column), states, t1)

        t0_count, metric_count = len(self.grids.t0), len(self.metrics)
        values = np.full((t0_count, metric_count), np.nan)
        status = np.full(t0_count, PENDING, dtype=np.int8)
        loss_curves = np.full((t0_count, len(self.grids.alphas)), np.nan)
        error_curves = np.full_like(loss_curves, np.nan)
        control = np.full(metric_count, np.nan)

        self.context.forget_states()
        parent_state = states[PARENT]
        for name, (t0, _) in self.twins.items():
            if name in self.diverged:
                if name != CONTROL:
                    status[self.grids.t0.index(t0)] = DIVERGED
                continue
            row, curves = self._measure_pair(parent_state, states[name])
            if name == CONTROL:
                control[:] = row
                continue
            index = self.grids.t0.index(t0)
            values[index], status[index] = row, DONE
            loss_curves[index] = curves.get("loss_barrier", np.nan)
            error_curves[index] = curves.get("error_barrier", np.nan)

        parent_outputs = self.context.test_outputs(parent_state)
        self._flush_losses()
        region = {"t1": slice(column, column + 1)}
        self.store.write(self.seed_index, region, {
            "values": (("t0", "t1", "metric"), values[:, np.newaxis, :]),
            "barrier_curve": (("t0", "t1", "alpha"), loss_curves[:, np.newaxis, :]),
            "error_curve": (("t0", "t1", "alpha"), error_curves[:, np.newaxis, :]),
            "control": (("t1", "metric"), control[np.newaxis, :]),
            "test_loss": (("t1",), [parent_outputs.loss]),
            "test_accuracy": (("t1",), [1.0 - parent_outputs.error]),
        })
        self.store.write(self.seed_index, region, {"status": (("t0", "t1"), status[:, np.newaxis])})
        self._remove_older_columns(column)
        self.context.forget_states()
        logger.info(
            "t1 = %d: measured %d twin(s); parent test accuracy %.2f%%",
            t1, int((status == DONE).sum()), 100 * (1.0 - parent_outputs.error),
        )

    def _measure_pair(self, parent: TrainingState, twin: TrainingState) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        self.context.begin_pair()
        merged = self.hooks.measure(a=parent, b=twin, context=self.context)
        unexpected = sorted(set(merged) - {metric.name for metric in self.metrics})
        if unexpected:
            raise PluginError(f"a measure hook returned metric(s) {', '.join(unexpected)} that were not requested")
        row = np.array([merged.get(metric.name, np.nan) for metric in self.metrics], dtype=np.float64)
        return row, dict(self.context.curves)

    def _flush_losses(self) -> None:
        if not self.losses:
            return
        region = {"step": slice(self.rows_start, self.rows_start + len(self.losses))}
        self.store.write(self.seed_index, region, {"train_loss": (("step",), self.losses)})
        self.rows_start += len(self.losses)
        self.losses = []

    # Resume ---------------------------------------------------------------------------

    def _column_folder(self, column: int) -> Path:
        return self.folder / "resume" / f"t1-{self.grids.t1[column]:09d}"

    @property
    def _interrupt_folder(self) -> Path:
        return self.folder / "resume" / "interrupted"

    def _save_members(self, folder: Path, states: dict[str, TrainingState], step: int) -> None:
        """Save the states, then members.json, which marks the folder complete."""
        for name, state in states.items():
            state.save(folder / f"{name}.safetensors")
        members = {
            "step": step,
            "twins": {name: t0 for name, (t0, _) in self.twins.items()},
            "diverged": self.diverged,
        }
        write_text_atomic(folder / MEMBERS_FILE, json.dumps(members, indent=2) + "\n")

    def _save_snapshot(self, step: int) -> None:
        """Save every member at `step`, before the step's grid work, so that a rerun continues here."""
        self._flush_losses()
        shutil.rmtree(self._interrupt_folder, ignore_errors=True)
        members = [self.parent] + [run for name, (_, run) in self.twins.items() if name not in self.diverged]
        self._save_members(self._interrupt_folder, {run.name: run.state() for run in members}, step)

    def _column_committed(self, column: int) -> bool:
        """Return True when the column's states were saved and its status written."""
        members_path = self._column_folder(column) / MEMBERS_FILE
        if not members_path.is_file():
            return False
        members = json.loads(members_path.read_text(encoding="utf-8"))
        t1 = self.grids.t1[column]
        with self.store.open() as dataset:
            status = dataset["status"]
            if self.store.has_seed:
                status = status.isel(seed=self.seed_index)
            column_status = status.isel(t1=column).values
        for name, t0 in members["twins"].items():
            if name != CONTROL and t0 <= t1 and column_status[self.grids.t0.index(t0)] == PENDING:
                return False
        return True

    def _resume(self) -> tuple[int, bool]:
        """Restore the members from the latest committed column or interrupt snapshot.

        Returns the step to start from and whether that step's grid work is done: it is
        for a committed column, not for a snapshot taken before the grid work.
        """
        committed = next((c for c in reversed(range(len(self.grids.t1))) if self._column_committed(c)), None)
        committed_step = self.grids.t1[committed] if committed is not None else -1
        snapshot = self._interrupt_folder / MEMBERS_FILE
        if snapshot.is_file():
            snapshot_step = int(json.loads(snapshot.read_text(encoding="utf-8"))["step"])
            if snapshot_step > committed_step:
                self._load_members(self._interrupt_folder)
                logger.info("resuming seed %d from the interrupt at step %d", self.config.train.init_seed, snapshot_step)
                return snapshot_step, False
        shutil.rmtree(self._interrupt_folder, ignore_errors=True)
        if committed is None:
            return 0, False
        self._load_members(self._column_folder(committed))
        self._remove_later_columns(committed)
        logger.info("resuming seed %d from t1 = %d", self.config.train.init_seed, committed_step)
        return committed_step, True

    def _load_members(self, folder: Path) -> None:
        members = json.loads((folder / MEMBERS_FILE).read_text(encoding="utf-8"))
        self.parent.load_state(TrainingState.load(folder / f"{PARENT}.safetensors", device=self.device))
        self.diverged = {name: int(step) for name, step in members["diverged"].items()}
        for name, t0 in members["twins"].items():
            role = "control" if name == CONTROL else "twin"
            twin = self._new_run(name, role)
            if name not in self.diverged:
                twin.load_state(TrainingState.load(folder / f"{name}.safetensors", device=self.device))
            self.twins[name] = (int(t0), twin)
        self.rows_start = self.parent.step + 1

    def _remove_older_columns(self, column: int) -> None:
        for older in range(column):
            shutil.rmtree(self._column_folder(older), ignore_errors=True)
        # A snapshot from before this column is older than the column itself.
        shutil.rmtree(self._interrupt_folder, ignore_errors=True)

    def _remove_later_columns(self, column: int) -> None:
        for later in range(column + 1, len(self.grids.t1)):
            shutil.rmtree(self._column_folder(later), ignore_errors=True)

    # Construction ---------------------------------------------------------------------

    def _new_run(self, name: str, role: str) -> Run:
        model = build_model(self.hooks.registry, self.config, self.data, self.device)
        return Run(name, self.config, self.plan, model, build_optimizer(model, self.config), role=role)

    def _new_context(self) -> MeasurementContext:
        chaos = self.config.chaos
        settings = MeasureSettings(
            test_subset=chaos.test_subset,
            bn_batches=chaos.bn_batches,
            bn_batch_size=self.config.train.batch_size,
            alpha_points=chaos.alpha_points,
            eval_batch_size=self.config.train.eval_batch_size,
            seed=self.config.train.data_seed,
        )
        scratch = build_model(self.hooks.registry, self.config, self.data, self.device)
        evaluator = StateEvaluator(scratch, self.stream.data, self.stream.normalise, settings)
        requested = tuple(metric.name for metric in self.metrics)
        kernels = None
        if KERNEL_METRIC in requested:
            kernels = KernelSource(scratch, self.stream.data, self.stream.normalise, self.config.ntk)
        return MeasurementContext(
            requested=requested,
            experiment="chaos",
            evaluator=evaluator,
            alphas=self.grids.alphas,
            kernels=kernels,
        )
