"""`twophase demo`: chaos and cone experiments on the bundled digits, with tables and figures."""

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
from twophase.core.cone import ConeConfig, run_cone
from twophase.core.config import load_config
from twophase.core.plugins import create_hooks

# An MLP on scikit-learn's 8x8 digits at a constant learning rate of 0.4 (about 96%
# test accuracy after 1,000 steps). Twins branched in the first tens of steps end far
# from their parent, and twins branched after about a hundred steps stay close. C
# falls by more than ten orders of magnitude across the t0 grid; B and D fall to zero.
DEMO_RUN: dict[str, Any] = {
    "model.name": "mlp",
    "model.width": 64,
    "data.name": "digits",
    "optimizer.lr": 0.4,
    "optimizer.milestones": [],
    "train.length": "1000",
    "train.batch_size": 128,
}
# Barriers between digits classifiers are small: even the earliest twins stay within a
# few hundredths of a nat, below the default threshold made for CIFAR-10 networks.
DEMO_CHAOS: dict[str, Any] = {
    **DEMO_RUN,
    "chaos.t0": "log:0:500:7",
    "chaos.t1": "log:1:end:10",
    "chaos.transition_threshold": 1e-3,
}
DEMO_CONE: dict[str, Any] = {
    **DEMO_RUN,
    "train.checkpoints": "log:0:end:12",
    "cone.dts": ["10"],
    "ntk.samples": 200,
}


@handle_errors
def demo_command(
    out: Annotated[Path, typer.Option("--out", help="Output folder of the demo; the experiments go to its chaos/ and cone/ folders.")] = Path("runs/demo"),
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace earlier experiments with another config in --out.")] = False,
    no_progress: options.NoProgress = False,
    verbose: options.Verbose = False,
) -> None:
    """Run small chaos and cone experiments on the bundled digits, then print their tables and draw their figures."""
    setup_logging(verbose)
    chaos_config = load_config(None, DEMO_CHAOS, kind=ChaosConfig)
    cone_config = load_config(None, DEMO_CONE, kind=ConeConfig)
    console.print(
        f"{chaos_config.model.name} (width {chaos_config.model.width}) on digits, learning rate "
        f"{chaos_config.optimizer.lr}, {chaos_config.train.length} steps: chaos with twins branched at "
        f"t0 = {chaos_config.chaos.t0}, then the eNTK cone at checkpoints {cone_config.train.checkpoints}",
        highlight=False,
    )
    reporter = ProgressReporter(console, bar=not no_progress)
    with reporter:
        chaos = run_chaos(chaos_config, out / "chaos", hooks=create_hooks(plugins=[reporter]), overwrite=overwrite)
        cone = run_cone(cone_config, out / "cone", hooks=create_hooks(plugins=[reporter]), overwrite=overwrite)

    for folder in (chaos.out, cone.out):
        show_results(folder)
        figures = draw_figures(folder)
        console.print(f"figures: {', '.join(str(path) for path in figures)}", highlight=False, soft_wrap=True)
    console.print(
        f"results: {chaos.store} and {cone.store}; each folder's config.toml reruns its experiment with "
        "`twophase chaos --config` or `twophase cone --config`",
        highlight=False,
        soft_wrap=True,
    )
