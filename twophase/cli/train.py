"""`twophase train`: train one run and save its checkpoints and curves."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from twophase.cli import options
from twophase.cli.console import console, handle_errors, setup_logging
from twophase.cli.progress import ProgressReporter
from twophase.core.config import load_config
from twophase.core.output import CurveStore
from twophase.core.plugins import create_hooks
from twophase.core.training import TrainResult, train


@handle_errors
@options.with_run_options
def train_command(
    run_overrides: dict[str, Any],
    out: Annotated[Path, typer.Option("--out", help="Output folder; rerunning the same command into it resumes the run.")],
    config: options.ConfigOption = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier run with another config in --out.")] = False,
    stop_at: Annotated[int | None, typer.Option("--stop-at", help="Stop after this step with a saved state; rerun without it to continue.")] = None,
    no_progress: options.NoProgress = False,
    verbose: options.Verbose = False,
) -> None:
    """Train one run, saving its states at the checkpoint grid and its curves under --out."""
    setup_logging(verbose)
    run_config = load_config(config, run_overrides)

    reporter = ProgressReporter(console, bar=not no_progress)
    hooks = create_hooks(plugins=[reporter])
    with reporter:
        result = train(run_config, out, hooks=hooks, overwrite=overwrite, stop_at=stop_at)
    print_summary(result)


def print_summary(result: TrainResult) -> None:
    """Print the test metrics at every checkpoint and the time per step."""
    with CurveStore(result.out / "curves.zarr").open() as curves:
        table = Table(title=f"test set at each checkpoint ({result.out})")
        table.add_column("step", justify="right")
        table.add_column("test loss", justify="right")
        table.add_column("test accuracy", justify="right")
        for step, loss, accuracy in zip(
            curves.checkpoint.values, curves.test_loss.values, curves.test_accuracy.values, strict=True
        ):
            if step <= result.step:
                table.add_row(str(step), f"{loss:.4f}", f"{100 * accuracy:.2f}%")
    console.print(table)

    if result.steps_taken:
        console.print(
            f"trained steps {result.start_step} to {result.step} of {result.total_steps} in "
            f"{result.train_seconds:.1f} s ({result.seconds_per_step:.3f} s per step, evaluation excluded)",
            highlight=False,
        )
    if not result.complete:
        console.print(f"stopped at step {result.step}; rerun without --stop-at to continue", highlight=False)
