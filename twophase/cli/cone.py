"""`twophase cone`: the eNTK of every checkpoint, compared over all pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from twophase.cli import options
from twophase.cli.chaos import split_list
from twophase.cli.console import console, handle_errors, setup_logging
from twophase.cli.progress import ProgressReporter
from twophase.core.cone import ConeConfig, run_cone
from twophase.core.cone.experiment import check_source_folder
from twophase.core.config import load_config
from twophase.core.output import CONFIG_FILE
from twophase.core.plugins import create_hooks

CONE = "Cone experiment"
NTK = "eNTK"

FromRun = Annotated[Path | None, typer.Option("--from", help="Output folder of a finished `twophase train` run whose checkpoints to use instead of training; its config becomes the base config.", rich_help_panel=CONE)]
Metrics = Annotated[str | None, typer.Option("--metrics", help="Comma-separated metrics compared over all pairs." + options.default_of("cone.metrics", ConeConfig), rich_help_panel=CONE)]
Offsets = Annotated[str | None, typer.Option("--dts", help="Comma-separated offsets dt of the S(t, t + dt) views, in steps or epochs such as 1ep; the states at t + dt are added to the checkpoints." + options.default_of("cone.dts", ConeConfig), rich_help_panel=CONE)]
Taus = Annotated[str | None, typer.Option("--taus", help="Comma-separated reference steps tau of the S(tau, t) views in show and plot; default: five checkpoints spread over the grid.", rich_help_panel=CONE)]
NtkSamples = Annotated[int | None, typer.Option("--ntk-samples", help="Training inputs of the eNTK, a fixed seeded subset." + options.default_of("ntk.samples", ConeConfig), rich_help_panel=NTK)]
NtkKind = Annotated[str | None, typer.Option("--ntk-kind", help="eNTK kind: trace (n x n, summed over logits), full (nc x nc) or logit-sum." + options.default_of("ntk.kind", ConeConfig), rich_help_panel=NTK)]
NtkSeed = Annotated[int | None, typer.Option("--ntk-seed", help="Seed of the eNTK's input subset." + options.default_of("ntk.seed", ConeConfig), rich_help_panel=NTK)]
NtkMemory = Annotated[int | None, typer.Option("--ntk-memory", help="Memory budget of one eNTK computation, in MiB." + options.default_of("ntk.memory", ConeConfig), rich_help_panel=NTK)]


@handle_errors
@options.with_run_options
def cone_command(
    run_overrides: dict[str, Any],
    out: Annotated[Path, typer.Option("--out", help="Output folder; rerunning the same command into it reuses the kernels computed so far.")],
    config: options.ConfigOption = None,
    from_run: FromRun = None,
    metrics: Metrics = None,
    dts: Offsets = None,
    taus: Taus = None,
    ntk_samples: NtkSamples = None,
    ntk_kind: NtkKind = None,
    ntk_seed: NtkSeed = None,
    ntk_memory: NtkMemory = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier experiment with another config in --out.")] = False,
    no_progress: options.NoProgress = False,
    verbose: options.Verbose = False,
) -> None:
    """Compute the eNTK of every checkpoint of a run and compare all pairs: kernel distance S and C."""
    setup_logging(verbose)
    if from_run is not None and config is None:
        # The run's own config is the base, so it must be a training run's.
        check_source_folder(from_run.expanduser().resolve())
        if (from_run / CONFIG_FILE).is_file():
            config = from_run / CONFIG_FILE
    overrides = {
        **run_overrides,
        "cone.from_run": str(from_run) if from_run is not None else None,
        "cone.metrics": split_list(metrics),
        "cone.dts": split_list(dts),
        "cone.taus": split_list(taus),
        "ntk.samples": ntk_samples,
        "ntk.kind": ntk_kind,
        "ntk.seed": ntk_seed,
        "ntk.memory": ntk_memory,
    }
    cone_config = load_config(config, overrides, kind=ConeConfig)

    reporter = ProgressReporter(console, bar=not no_progress)
    with reporter:
        result = run_cone(cone_config, out, hooks=create_hooks(plugins=[reporter]), overwrite=overwrite)
    console.print(
        f"results in {result.store} ({result.kernels_computed} eNTK(s) computed); `twophase show {result.out}` "
        f"prints the cone table and `twophase plot {result.out}` draws the figures",
        highlight=False,
        soft_wrap=True,
    )
