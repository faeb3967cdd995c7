"""`twophase chaos`: perturbed twins compared with their parent over (t0, t1)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from twophase.cli import options
from twophase.cli.console import console, handle_errors, setup_logging
from twophase.cli.progress import ProgressReporter
from twophase.core.chaos import ChaosConfig, run_chaos
from twophase.core.config import load_config
from twophase.core.errors import UsageError
from twophase.core.plugins import create_hooks

CHAOS = "Chaos experiment"

T0 = Annotated[str | None, typer.Option("--t0", help="Step grid where twins branch and are perturbed, such as log:0:10000:9." + options.default_of("chaos.t0", ChaosConfig), rich_help_panel=CHAOS)]
T1 = Annotated[str | None, typer.Option("--t1", help="Step grid where twins are compared with the parent." + options.default_of("chaos.t1", ChaosConfig), rich_help_panel=CHAOS)]
Eps = Annotated[float | None, typer.Option("--eps", help="Perturbation size: the L2 norm for gaussian and coordinate, relative to the parameters' norm for relative and layerwise." + options.default_of("chaos.eps", ChaosConfig), rich_help_panel=CHAOS)]
Perturbation = Annotated[str | None, typer.Option("--perturbation", help="Perturbation kind: gaussian, relative, layerwise, coordinate or none." + options.default_of("chaos.perturbation", ChaosConfig), rich_help_panel=CHAOS)]
PerturbParameters = Annotated[str | None, typer.Option("--perturb-parameters", help="Comma-separated name patterns of the parameters to perturb, such as 'fc.*'." + options.default_of("chaos.perturb_parameters", ChaosConfig), rich_help_panel=CHAOS)]
PerturbationSeed = Annotated[int | None, typer.Option("--perturbation-seed", help="Seed of the perturbation directions." + options.default_of("chaos.perturbation_seed", ChaosConfig), rich_help_panel=CHAOS)]
Metrics = Annotated[str | None, typer.Option("--metrics", help="Comma-separated metrics to measure." + options.default_of("chaos.metrics", ChaosConfig), rich_help_panel=CHAOS)]
AlphaPoints = Annotated[int | None, typer.Option("--alpha-points", help="Points of the barrier's interpolation grid, 0 and 1 included." + options.default_of("chaos.alpha_points", ChaosConfig), rich_help_panel=CHAOS)]
BatchNormBatches = Annotated[int | None, typer.Option("--bn-batches", help="Training batches that recompute BatchNorm statistics of interpolated networks; 0 turns it off." + options.default_of("chaos.bn_batches", ChaosConfig), rich_help_panel=CHAOS)]
TestSubset = Annotated[int | None, typer.Option("--test-subset", help="Test images used for measuring, a fixed seeded subset; 0 for all." + options.default_of("chaos.test_subset", ChaosConfig), rich_help_panel=CHAOS)]
Seeds = Annotated[str | None, typer.Option("--seeds", help="Replicates, such as 0,1,2: each seed sets the init and data seeds of one repetition, stored along a seed dimension.", rich_help_panel=CHAOS)]


@handle_errors
@options.with_run_options
def chaos_command(
    run_overrides: dict[str, Any],
    out: Annotated[Path, typer.Option("--out", help="Output folder; rerunning the same command into it resumes the experiment.")],
    config: options.ConfigOption = None,
    t0: T0 = None,
    t1: T1 = None,
    eps: Eps = None,
    perturbation: Perturbation = None,
    perturb_parameters: PerturbParameters = None,
    perturbation_seed: PerturbationSeed = None,
    metrics: Metrics = None,
    alpha_points: AlphaPoints = None,
    bn_batches: BatchNormBatches = None,
    no_bn_recompute: Annotated[bool, typer.Option("--no-bn-recompute", help="Keep the interpolated networks' BatchNorm statistics interpolated instead of recomputing them (the same as --bn-batches 0).", rich_help_panel=CHAOS)] = False,
    test_subset: TestSubset = None,
    seeds: Seeds = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier experiment with another config in --out.")] = False,
    no_progress: options.NoProgress = False,
    verbose: options.Verbose = False,
) -> None:
    """Train a parent, branch perturbed twins at each t0, and compare them with the parent at each t1."""
    setup_logging(verbose)
    overrides = {
        **run_overrides,
        "chaos.t0": t0,
        "chaos.t1": t1,
        "chaos.eps": eps,
        "chaos.perturbation": perturbation,
        "chaos.perturb_parameters": perturb_parameters,
        "chaos.perturbation_seed": perturbation_seed,
        "chaos.metrics": split_list(metrics),
        "chaos.alpha_points": alpha_points,
        "chaos.bn_batches": 0 if no_bn_recompute else bn_batches,
        "chaos.test_subset": test_subset,
        "chaos.seeds": parse_seeds(seeds),
    }
    chaos_config = load_config(config, overrides, kind=ChaosConfig)

    reporter = ProgressReporter(console, bar=not no_progress)
    hooks = create_hooks(plugins=[reporter])
    with reporter:
        result = run_chaos(chaos_config, out, hooks=hooks, overwrite=overwrite)
    console.print(f"results in {result.store}; `twophase show {result.out}` prints the table and `twophase plot {result.out}` draws the figures", highlight=False)


def split_list(text: str | None) -> list[str] | None:
    """Split a comma-separated option into its items."""
    if text is None:
        return None
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_seeds(text: str | None) -> list[int] | None:
    """Parse --seeds such as 0,1,2."""
    items = split_list(text)
    if items is None:
        return None
    try:
        return [int(item) for item in items]
    except ValueError:
        raise UsageError(f"invalid --seeds {text!r}: expected integers separated by commas, such as 0,1,2") from None
