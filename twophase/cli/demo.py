"""`twophase demo`: a chaos experiment on the bundled digits, with its table and figures."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from twophase.cli import options
from twophase.cli.console import console, handle_errors, setup_logging
from twophase.cli.plot import draw_figures
from twophase.cli.progress import ProgressReporter
from twophase.cli.show import show_results
from twophase.core.chaos import ChaosConfig, run_chaos
from twophase.core.config import load_config
from twophase.core.plugins import create_hooks

# An MLP on scikit-learn's 8x8 digits at a constant learning rate of 0.4 (about 96%
# test accuracy after 1,000 steps). Twins branched in the first tens of steps end far
# from their parent, and twins branched after about a hundred steps stay close. C
# falls by more than ten orders of magnitude across the t0 grid; B and D fall to zero.
DEMO_CHAOS: dict[str, Any] = {
    "model.name": "mlp",
    "model.width": 64,
    "data.name": "digits",
    "optimizer.lr": 0.4,
    "optimizer.milestones": [],
    "train.length": "1000",
    "train.batch_size": 128,
    "chaos.t0": "log:0:500:7",
    "chaos.t1": "log:1:end:10",
}

# Barriers between digits classifiers are small: even the earliest twins stay within a
# few hundredths of a nat, below the default threshold made for CIFAR-10 networks.
DEMO_TRANSITION_THRESHOLD = 1e-3


@handle_errors
def demo_command(
    out: Annotated[Path, typer.Option("--out", help="Output folder of the demo.")] = Path("runs/demo"),
    no_progress: options.NoProgress = False,
    verbose: options.Verbose = False,
) -> None:
    """Run a small chaos experiment on the bundled digits, then print its table and draw its figures."""
    setup_logging(verbose)
    config = load_config(None, DEMO_CHAOS, kind=ChaosConfig)
    console.print(
        f"chaos experiment: {config.model.name} (width {config.model.width}) on digits, learning rate "
        f"{config.optimizer.lr}, {config.train.length} steps, twins branched at t0 = {config.chaos.t0}",
        highlight=False,
    )
    reporter = ProgressReporter(console, bar=not no_progress)
    with reporter:
        result = run_chaos(config, out, hooks=create_hooks(plugins=[reporter]))

    show_results(result.out, DEMO_TRANSITION_THRESHOLD)
    figures = draw_figures(result.out)
    console.print(f"results: {result.store}", highlight=False, soft_wrap=True)
    console.print(f"figures: {', '.join(str(path) for path in figures)}", highlight=False, soft_wrap=True)
    console.print(f"config: {result.out / 'config.toml'} (rerun with `twophase chaos --config` to vary it)", highlight=False, soft_wrap=True)
