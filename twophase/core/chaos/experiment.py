"""The chaos experiment: set-up shared by all replicates, then one replicate per seed."""

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

from twophase.core.analysis import check_store, transition_attrs
from twophase.core.chaos.config import ChaosConfig
from twophase.core.chaos.replicate import KERNEL_METRIC, ChaosPlan, Replicate
from twophase.core.config import parse_setting
from twophase.core.data import ImageData
from twophase.core.errors import ConfigError
from twophase.core.measure import KernelSource
from twophase.core.perturbation import select_parameters
from twophase.core.output import RESULTS_STORE, RunDirectory, package_versions
from twophase.core.plugins import Hooks, create_hooks
from twophase.core.run import RunPlan, build_model
from twophase.core.steps import StepGrid
from twophase.core.store import ChaosLayout, ResultStore, require_intact
from twophase.core.training import prepare_run

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChaosResult:
    """Summary of one `run_chaos` call."""

    out: Path
    store: Path
    seconds: float
    steps_taken: int


def run_chaos(config: ChaosConfig, out: str | Path, *, hooks: Hooks | None = None, overwrite: bool = False) -> ChaosResult:
    """Run a chaos experiment into `out`, resuming from its store and saved states if it exists."""
    started = time.perf_counter()
    hooks = hooks or create_hooks()
    metrics = hooks.registry.metrics_for(config.chaos.metrics, "chaos")
    hooks.registry.perturbation(config.chaos.perturbation)
    prepared = prepare_run(config, hooks)
    config, device, data, base_plan = prepared.config, prepared.device, prepared.data, prepared.plan
    augmentation = base_plan.augmentation
    chaos_plan = resolve_grids(config, base_plan)
    # The parent's states are saved at every t0 and t1 and at the run's own checkpoints.
    saved = set(chaos_plan.t0) | set(chaos_plan.t1) | {step for step in base_plan.checkpoints if step <= chaos_plan.t1[-1]}
    plan = dataclasses.replace(base_plan, checkpoints=tuple(sorted(saved)))
    if chaos_plan.t1[-1] < base_plan.total_steps:
        logger.warning(
            "the t1 grid ends at step %d, before the end of training at step %d; the experiment stops at step %d",
            chaos_plan.t1[-1], base_plan.total_steps, chaos_plan.t1[-1],
        )
    _check_test_subset(config, data)
    model = build_model(hooks.registry, config, data, device)
    select_parameters([name for name, _ in model.named_parameters()], config.chaos.perturb_parameters)
    if KERNEL_METRIC in config.chaos.metrics:
        # Checks the eNTK subset and memory budget before anything is written.
        KernelSource(model, prepared.stream.data, prepared.stream.normalise, config.ntk)

    directory = RunDirectory(out, kind="chaos", config_type=ChaosConfig)
    store = ResultStore(directory.path / RESULTS_STORE)
    try:
        existing = directory.prepare(config, plan, config.train.deterministic, overwrite)
        if existing and store.path.exists():
            name = f"results store {str(store.path)!r}"
            require_intact(store.path, name, "move the folder aside, or rerun with --overwrite to start again")
            check_store(store.open(), name=name)
            logger.info("resuming the chaos experiment in %s", directory.path)
        else:
            layout = ChaosLayout(
                seeds=config.chaos.seeds or None,
                t0=chaos_plan.t0,
                t1=chaos_plan.t1,
                metrics=metrics,
                alphas=chaos_plan.alphas,
                total_steps=plan.total_steps,
            )
            store.create_chaos(layout, _store_attrs(config, plan, chaos_plan, device))

        steps_taken = 0
        seeds: list[int | None] = list(config.chaos.seeds) or [None]
        for seed_index, seed in enumerate(seeds):
            replicate_config = config
            if seed is not None:
                replicate_config = dataclasses.replace(
                    config, train=dataclasses.replace(config.train, init_seed=seed, data_seed=seed)
                )
            replicate = Replicate(
                config=replicate_config,
                plan=plan,
                chaos_plan=chaos_plan,
                metrics=metrics,
                data=data,
                augmentation=augmentation,
                device=device,
                hooks=hooks,
                store=store,
                folder=directory.path / "states" / f"seed-{replicate_config.train.init_seed}",
                seed_index=seed_index,
            )
            steps_taken += replicate.run()
        with store.open() as results:
            store.set_attrs(transition_attrs(results.load(), config.chaos.transition_threshold))
        store.consolidate()
    finally:
        directory.release()
    seconds = time.perf_counter() - started
    logger.info("chaos experiment in %s finished in %.1f s", directory.path, seconds)
    return ChaosResult(out=directory.path, store=store.path, seconds=seconds, steps_taken=steps_taken)


def resolve_grids(config: ChaosConfig, plan: RunPlan) -> ChaosPlan:
    """Resolve the t0 and t1 grids; every t0 needs a t1 at or after it."""
    t0 = parse_setting("chaos.t0", lambda text: StepGrid.parse(text).resolve(plan.steps_per_epoch, plan.total_steps), config.chaos.t0)
    t1 = parse_setting("chaos.t1", lambda text: StepGrid.parse(text).resolve(plan.steps_per_epoch, plan.total_steps), config.chaos.t1)
    unmeasured = [step for step in t0 if step > t1[-1]]
    if unmeasured:
        raise ConfigError(
            f"invalid value for chaos.t0: twins branched at step(s) {unmeasured} are never measured, "
            f"because the last t1 is step {t1[-1]}; extend chaos.t1 or drop those t0"
        )
    positive = [step for step in (*t0, *t1) if step > 0]
    control_t0 = next((step for step in t0 if step > 0), min(positive) if positive else 0)
    alphas = np.linspace(0.0, 1.0, config.chaos.alpha_points)
    return ChaosPlan(t0=t0, t1=t1, control_t0=control_t0, alphas=alphas)


def _check_test_subset(config: ChaosConfig, data: ImageData) -> None:
    count = int(data.test_images.shape[0])
    if config.chaos.test_subset > count:
        raise ConfigError(
            f"invalid value for chaos.test_subset: {config.chaos.test_subset} exceeds the {count} test images "
            f"of {data.name!r}; use at most {count}, or 0 for all"
        )


def _store_attrs(config: ChaosConfig, plan: RunPlan, chaos_plan: ChaosPlan, device: torch.device) -> dict[str, object]:
    return {
        "experiment": "chaos",
        "config": json.dumps(config.to_dict()),
        "versions": json.dumps(package_versions()),
        "device": str(device),
        "deterministic": config.train.deterministic,
        "steps_per_epoch": plan.steps_per_epoch,
        "total_steps": plan.total_steps,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "control_t0": chaos_plan.control_t0,
        "perturbation": config.chaos.perturbation,
        "eps": config.chaos.eps,
        "bn_batches": config.chaos.bn_batches,
        "test_subset": config.chaos.test_subset,
    }
