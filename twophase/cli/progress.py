"""Training progress as a plugin: a rich progress bar, or periodic log lines."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from twophase import hookimpl

if TYPE_CHECKING:
    from twophase.core.run import Run

logger = logging.getLogger("twophase.cli.progress")

LOG_INTERVAL_SECONDS = 30.0

# Twins step in lockstep with their parent, so the parent's bar stands for all of them.
SHOWN_ROLES = ("train", "parent")


class _SpeedColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:.2f} steps/s", style="progress.data.speed")


class ProgressReporter:
    """Show loss, steps per second and time left for every run that trains.

    With `bar=False`, or when the console is not a terminal, it logs one line every
    LOG_INTERVAL_SECONDS instead of drawing a bar.
    """

    def __init__(self, console: Console, bar: bool = True) -> None:
        self.console = console
        self.bar = bar and console.is_terminal
        self.progress: Progress | None = None
        self.tasks: dict[str, int] = {}
        self.last_log = 0.0
        self.started: dict[str, tuple[float, int]] = {}

    def __enter__(self) -> ProgressReporter:
        if self.bar:
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                _SpeedColumn(),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    @hookimpl
    def on_run_start(self, run: Run) -> None:
        if run.role not in SHOWN_ROLES:
            return
        self.started[run.name] = (time.monotonic(), run.step)
        self.last_log = time.monotonic()
        if self.progress is not None:
            self.tasks[run.name] = self.progress.add_task(
                run.name, total=run.plan.total_steps, completed=run.step, loss="-"
            )

    @hookimpl
    def on_step(self, run: Run, step: int, loss: float) -> None:
        if run.name not in self.started:
            return
        if self.progress is not None:
            self.progress.update(self.tasks[run.name], completed=step, loss=f"{loss:.4f}")
            return
        now = time.monotonic()
        if now - self.last_log >= LOG_INTERVAL_SECONDS:
            self.last_log = now
            logger.info("%s", self._status_line(run, step, loss, now))

    @hookimpl
    def on_run_end(self, run: Run) -> None:
        if self.progress is not None and run.name in self.tasks:
            self.progress.update(self.tasks[run.name], completed=run.plan.total_steps)

    def _status_line(self, run: Run, step: int, loss: float, now: float) -> str:
        started_at, first_step = self.started[run.name]
        done = step - first_step
        rate = done / (now - started_at) if now > started_at else 0.0
        left = (run.plan.total_steps - step) / rate if rate > 0 else float("nan")
        return (
            f"{run.name}: step {step}/{run.plan.total_steps}, loss {loss:.4f}, "
            f"{rate:.2f} steps/s, {_duration(left)} left"
        )


def _duration(seconds: float) -> str:
    if seconds != seconds:
        return "unknown time"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
