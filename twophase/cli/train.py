"""`twophase train`: train one run and save its checkpoints and curves."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
def train_command(
    out: Annotated[Path, typer.Option("--out", help="Output folder; rerunning the same command into it resumes the run.")],
    config: options.ConfigOption = None,
    model: options.ModelName = None,
    width: options.Width = None,
    model_option: options.ModelOptions = None,
    dataset: options.DatasetName = None,
    data_dir: options.DataDir = None,
    download: options.Download = None,
    augmentation: options.Augmentation = None,
    data_option: options.DataOptions = None,
    cache_dir: options.CacheDir = None,
    lr: options.LearningRate = None,
    momentum: options.Momentum = None,
    weight_decay: options.WeightDecay = None,
    nesterov: options.Nesterov = None,
    milestones: options.Milestones = None,
    lr_factor: options.LearningRateFactor = None,
    steps: options.Steps = None,
    epochs: options.Epochs = None,
    batch_size: options.BatchSize = None,
    init_seed: options.InitSeed = None,
    data_seed: options.DataSeed = None,
    checkpoints: options.Checkpoints = None,
    eval_batch_size: options.EvalBatchSize = None,
    device: options.Device = None,
    deterministic: options.Deterministic = None,
    channels_last: options.ChannelsLast = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier run with another config in --out.")] = False,
    stop_at: Annotated[int | None, typer.Option("--stop-at", help="Stop after this step with a saved state; rerun without it to continue.")] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="Log a status line every 30 s instead of drawing a progress bar.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False,
) -> None:
    """Train one run, saving its states at the checkpoint grid and its curves under --out."""
    setup_logging(verbose)
    overrides = options.run_overrides(
        model=model, width=width, model_option=model_option, dataset=dataset, data_dir=data_dir,
        download=download, augmentation=augmentation, data_option=data_option, cache_dir=cache_dir,
        lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov, milestones=milestones,
        lr_factor=lr_factor, steps=steps, epochs=epochs, batch_size=batch_size, init_seed=init_seed,
        data_seed=data_seed, checkpoints=checkpoints, eval_batch_size=eval_batch_size, device=device,
        deterministic=deterministic, channels_last=channels_last,
    )
    run_config = load_config(config, overrides)

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
