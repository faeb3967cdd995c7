"""Train one run: load data, build the model, step, evaluate and save at checkpoints."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from twophase.core.config import C, RunConfig
from twophase.core.data import ImageData
from twophase.core.device import configure_determinism, resolve_device
from twophase.core.errors import (
    ConfigError,
    DataError,
    PluginError,
    TrainingDivergedError,
    TrainingInterrupted,
    TwophaseError,
)
from twophase.core.output import CurveStore, RunDirectory
from twophase.core.store import require_intact
from twophase.core.plugins import Hooks, create_hooks
from twophase.core.run import Run, RunPlan, build_model, build_optimizer, make_plan
from twophase.core.specs import DatasetRequest
from twophase.core.stream import DataStream

logger = logging.getLogger(__name__)

CACHE_ENVIRONMENT_VARIABLE = "TWOPHASE_CACHE_DIR"


@dataclass(frozen=True)
class TrainResult:
    """Summary of one `train` call, for the CLI and for notebooks."""

    out: Path
    start_step: int
    step: int
    total_steps: int
    test_loss: float
    test_accuracy: float
    train_seconds: float
    steps_taken: int

    @property
    def complete(self) -> bool:
        return self.step == self.total_steps

    @property
    def seconds_per_step(self) -> float:
        return self.train_seconds / self.steps_taken if self.steps_taken else math.nan


def default_cache_dir() -> Path:
    """Return TWOPHASE_CACHE_DIR, else $XDG_CACHE_HOME/twophase, else ~/.cache/twophase."""
    explicit = os.environ.get(CACHE_ENVIRONMENT_VARIABLE)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "twophase"


def load_data(config: RunConfig, hooks: Hooks) -> ImageData:
    """Load the configured data set through the plugin that registered it."""
    spec = hooks.registry.dataset(config.data.name)
    request = DatasetRequest(
        name=config.data.name,
        data_dir=Path(config.data.data_dir).expanduser() if config.data.data_dir else None,
        download=config.data.download,
        cache_dir=Path(config.data.cache_dir).expanduser() if config.data.cache_dir else default_cache_dir(),
        options=dict(config.data.options),
    )
    started = time.perf_counter()
    try:
        data = spec.load(request)
    except TwophaseError:
        raise
    except MemoryError:
        raise DataError(
            f"not enough memory to load data set {config.data.name!r} with options {dict(config.data.options)}; "
            "use smaller options or a machine with more memory"
        ) from None
    except Exception as error:
        plugin = hooks.registry.datasets[config.data.name].plugin
        raise PluginError(
            f"data set {config.data.name!r} of plugin {plugin!r} failed to load: {type(error).__name__}: {error}"
        ) from error
    if not isinstance(data, ImageData):
        plugin = hooks.registry.datasets[config.data.name].plugin
        raise PluginError(f"data set {config.data.name!r} of plugin {plugin!r} returned {type(data).__name__}, not ImageData")
    logger.info(
        "loaded %s: %d training and %d test images of shape %s, %d classes, in %.1f s",
        data.name, data.train_images.shape[0], data.test_images.shape[0],
        tuple(data.train_images.shape[1:]), data.num_classes, time.perf_counter() - started,
    )
    return data


@torch.no_grad()
def evaluate(model: nn.Module, stream: DataStream, batch_size: int) -> tuple[float, float]:
    """Return mean cross-entropy and accuracy on the whole test set, in eval mode."""
    was_training = model.training
    model.eval()
    images, labels = stream.data.test_images, stream.data.test_labels
    total_loss = torch.zeros((), dtype=torch.float64, device=images.device)
    correct = torch.zeros((), dtype=torch.int64, device=images.device)
    for start in range(0, images.shape[0], batch_size):
        logits = model(stream.normalise(images[start : start + batch_size]))
        target = labels[start : start + batch_size]
        total_loss += F.cross_entropy(logits.double(), target, reduction="sum")
        correct += (logits.argmax(dim=1) == target).sum()
    model.train(was_training)
    count = images.shape[0]
    return total_loss.item() / count, correct.item() / count


def train(
    config: RunConfig,
    out: str | Path,
    *,
    hooks: Hooks | None = None,
    overwrite: bool = False,
    stop_at: int | None = None,
) -> TrainResult:
    """Train one run into `out`, resuming from its latest saved state if there is one.

    `stop_at` ends the call after that step with a saved state, so that a later call
    continues the same run.
    """
    hooks = hooks or create_hooks()
    prepared = prepare_run(config, hooks)
    config, device, data, stream, plan = prepared.config, prepared.device, prepared.data, prepared.stream, prepared.plan
    if stop_at is not None and not 0 <= stop_at <= plan.total_steps:
        raise ConfigError(f"invalid stop step {stop_at}: it must lie between 0 and the last step, {plan.total_steps}")

    # The model is built before the output folder is written, so that a rejected model
    # option leaves no folder whose config a corrected rerun would conflict with.
    model = build_model(hooks.registry, config, data, device)
    directory = RunDirectory(out)
    try:
        resuming = directory.prepare(config, plan, config.train.deterministic, overwrite)
        run = Run(directory.path.resolve().name, config, plan, model, build_optimizer(model, config), out_dir=directory.path)
        curves = CurveStore(directory.curves_path)

        state = directory.latest_state(device) if resuming else None
        if state is not None:
            # A checkpoint before the latest state that was deleted or damaged since is
            # written again by training from the state before it.
            damaged = directory.unreadable_checkpoints(step for step in plan.checkpoints if step <= state.step)
            if damaged:
                state = directory.latest_state(device, before=damaged[0])
                logger.warning(
                    "checkpoint(s) at step(s) %s are missing or damaged; training again from step %d to write them",
                    ", ".join(map(str, damaged[:10])), state.step if state is not None else 0,
                )
        if state is not None and curves.path.exists():
            require_intact(curves.path, f"curves store {str(curves.path)!r}", "rerun with --overwrite to train again from step 0")
            run.load_state(state)
            logger.info("resuming %s from step %d", directory.path, run.step)
        else:
            if resuming:
                logger.warning("%s has no saved state and curves to resume from; training from step 0", directory.path)
            curves.create(plan, config)

        if stop_at is not None and stop_at < run.step:
            raise ConfigError(
                f"invalid stop step {stop_at}: the run in {str(directory.path)!r} is already at step "
                f"{run.step}; give a later step or leave out the stop step"
            )
        return _Loop(run, stream, curves, directory, hooks).run(stop_at if stop_at is not None else plan.total_steps)
    finally:
        directory.release()


@dataclass(frozen=True)
class PreparedRun:
    """A run's config with absolute paths, its device, data, data stream and plan."""

    config: RunConfig
    device: torch.device
    data: ImageData
    stream: DataStream
    plan: RunPlan


def prepare_run(config: C, hooks: Hooks) -> PreparedRun:
    """Check the names, pick the device, load the data and resolve the plan of a run.

    Everything here fails before an output folder is touched.
    """
    config = with_absolute_paths(config)
    hooks.registry.model(config.model.name)
    dataset_spec = hooks.registry.dataset(config.data.name)
    device = resolve_device(config.train.device)
    configure_determinism(device, config.train.deterministic)

    data = load_data(config, hooks)
    augmentation = dataset_spec.default_augmentation if config.data.augmentation == "auto" else config.data.augmentation
    stream = DataStream(data, config.train.batch_size, config.train.data_seed, augmentation, device, config.train.channels_last)
    plan = make_plan(config, stream.steps_per_epoch, augmentation, device)
    return PreparedRun(config=config, device=device, data=data, stream=stream, plan=plan)


def with_absolute_paths(config: C) -> C:
    """Return the config with its data and cache folders as absolute paths.

    The saved config then finds the same data when it is rerun from another folder.
    """
    data = config.data
    absolute = {
        key: str(Path(value).expanduser().resolve())
        for key, value in (("data_dir", data.data_dir), ("cache_dir", data.cache_dir))
        if value is not None
    }
    return dataclasses.replace(config, data=dataclasses.replace(data, **absolute)) if absolute else config


class _Loop:
    """The step loop of one run, with buffered curve rows and clean SIGINT handling."""

    def __init__(self, run: Run, stream: DataStream, curves: CurveStore, directory: RunDirectory, hooks: Hooks) -> None:
        self.run_ = run
        self.stream = stream
        self.curves = curves
        self.directory = directory
        self.hooks = hooks
        self.rows: dict[str, list] = {"loss": [], "accuracy": [], "lr": [], "fingerprint": []}
        self.rows_start = run.step + 1
        self.last_test = (math.nan, math.nan)

    def run(self, stop_at: int) -> TrainResult:
        run, plan = self.run_, self.run_.plan
        start_step = run.step
        if start_step == plan.total_steps:
            logger.info("%s is already complete at step %d", self.directory.path, start_step)
            self.last_test = self._saved_test_metrics(plan.checkpoints.index(start_step))
            return self._result(start_step, 0.0)

        logger.info("training %s from step %d to %d of %d", self.directory.path, start_step, stop_at, plan.total_steps)
        self.hooks.on_run_start(run=run)
        train_seconds = 0.0
        with interrupt_flag() as interrupted:
            if run.step == 0 and 0 in plan.checkpoints:
                self._checkpoint()
            while run.step < stop_at:
                started = time.perf_counter()
                self._step()
                train_seconds += time.perf_counter() - started
                if run.step in plan.checkpoints:
                    self._checkpoint()
                if interrupted.is_set() and run.step < stop_at:
                    self._save_resume_state()
                    self.curves.consolidate()
                    raise TrainingInterrupted(
                        f"interrupted at step {run.step} of {plan.total_steps}; the state is saved in "
                        f"{str(self.directory.path)!r}, rerun the same command to resume"
                    )

        if run.step < plan.total_steps:
            self._save_resume_state()
            self.curves.consolidate()
            logger.info("stopped at step %d as requested; rerun without a stop step to continue", run.step)
        else:
            self.curves.consolidate()
            self.directory.remove_resume_states()
            self.hooks.on_run_end(run=run)
            logger.info("finished %s at step %d", self.directory.path, run.step)
        return self._result(start_step, train_seconds)

    def _step(self) -> None:
        run = self.run_
        batch = self.stream.batch(run.step)
        learning_rate = run.learning_rate()
        loss, accuracy = run.train_on(batch)
        self.rows["loss"].append(loss)
        self.rows["accuracy"].append(accuracy)
        self.rows["lr"].append(learning_rate)
        self.rows["fingerprint"].append(batch.fingerprint)
        if not math.isfinite(loss):
            self._flush_rows()
            self.curves.consolidate()
            raise TrainingDivergedError(
                f"training loss is {loss} at step {run.step} of the run in {str(self.directory.path)!r}; "
                f"lower the learning rate (now {learning_rate:g}) and train again with --overwrite"
            )
        self.hooks.on_step(run=run, step=run.step, loss=loss)

    def _checkpoint(self) -> None:
        """Evaluate, record and save the state at a checkpoint step, in crash-safe order.

        Curves are written before the state, so a saved state always has its curves. The
        hook gets a copy of its own, so a plugin that changes it cannot change the file.
        """
        run = self.run_
        self.hooks.on_checkpoint(run=run, step=run.step, state=run.state())
        test_loss, test_accuracy = evaluate(run.model, self.stream, run.config.train.eval_batch_size)
        self.last_test = (test_loss, test_accuracy)
        self._flush_rows()
        self.curves.write_checkpoint(run.plan.checkpoints.index(run.step), test_loss, test_accuracy)
        run.state().save(self.directory.checkpoint_path(run.step))
        logger.info("step %d: test loss %.4f, test accuracy %.2f%%", run.step, test_loss, 100 * test_accuracy)

    def _save_resume_state(self) -> None:
        self._flush_rows()
        self.run_.state().save(self.directory.resume_path(self.run_.step))

    def _flush_rows(self) -> None:
        rows = self.rows
        self.curves.write_steps(self.rows_start, rows["loss"], rows["accuracy"], rows["lr"], rows["fingerprint"])
        self.rows_start += len(rows["loss"])
        for values in rows.values():
            values.clear()

    def _saved_test_metrics(self, index: int) -> tuple[float, float]:
        with self.curves.open() as saved:
            return float(saved.test_loss[index]), float(saved.test_accuracy[index])

    def _result(self, start_step: int, train_seconds: float) -> TrainResult:
        run = self.run_
        return TrainResult(
            out=self.directory.path,
            start_step=start_step,
            step=run.step,
            total_steps=run.plan.total_steps,
            test_loss=self.last_test[0],
            test_accuracy=self.last_test[1],
            train_seconds=train_seconds,
            steps_taken=run.step - start_step,
        )


@contextmanager
def interrupt_flag() -> Iterator[threading.Event]:
    """Turn the first SIGINT or SIGTERM into a flag that the loop checks between steps.

    A step cut in half would leave parameters and momentum out of step with each
    other, so the loop finishes the step in progress and then saves a state. Batch
    schedulers send SIGTERM before they kill a job. A second signal raises
    KeyboardInterrupt at once.
    """
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handle(signum: int, frame: object) -> None:
        if flag.is_set():
            raise KeyboardInterrupt
        logger.warning("%s received; stopping after the current step (press Ctrl-C again to abort)", signal.Signals(signum).name)
        flag.set()

    previous = {signum: signal.signal(signum, handle) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into KeyboardInterrupt for the duration, for work that may stop anywhere.

    A process started with SIGINT ignored, such as a background job of a script, keeps
    ignoring it, and SIGTERM ends a process without a message. Here both raise, like Ctrl-C.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, handle) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
