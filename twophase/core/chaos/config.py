"""Configuration of the chaos experiment: the training run plus the `[chaos]` table."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from twophase.core.config import MAX_SEED, NtkSettings, RunConfig, parse_setting, require, with_help
from twophase.core.steps import StepGrid

MAX_ALPHA_POINTS = 1001
DEFAULT_METRICS = ("param_cosine", "param_distance", "loss_barrier", "error_barrier", "disagreement")


@dataclass(frozen=True)
class ChaosSettings:
    """The `[chaos]` table: branching and measuring grids, perturbation and metrics."""

    t0: str = field(default="log:0:10ep:9", metadata=with_help("step grid where twins branch from the parent and are perturbed"))
    t1: str = field(default="log:1:end:12", metadata=with_help("step grid where every twin with t0 <= t1 is compared with the parent"))
    eps: float = field(default=1e-7, metadata=with_help("size of the perturbation (its meaning depends on the kind)"))
    perturbation: str = field(default="gaussian", metadata=with_help("perturbation kind: gaussian, relative, layerwise, coordinate, none"))
    perturb_parameters: str = field(default="*", metadata=with_help("comma-separated name patterns of the parameters to perturb"))
    perturbation_seed: int = field(default=0, metadata=with_help("seed of the perturbation directions"))
    metrics: tuple[str, ...] = field(default=DEFAULT_METRICS, metadata=with_help("metrics to measure"))
    alpha_points: int = field(default=11, metadata=with_help("points of the interpolation grid of the barriers, 0 and 1 included"))
    bn_batches: int = field(default=10, metadata=with_help("training batches that recompute BatchNorm statistics of interpolated networks; 0 turns it off"))
    test_subset: int = field(default=0, metadata=with_help("test images used for measuring, a fixed seeded subset; 0 for all"))
    seeds: tuple[int, ...] = field(default=(), metadata=with_help("replicates: each seed sets the init and data seeds of one repetition"))
    transition_threshold: float = field(default=0.1, metadata=with_help("loss barrier in nats below which a t0 counts as stable, for the stored transition step"))


@dataclass(frozen=True)
class ChaosConfig(RunConfig):
    """A chaos experiment: the parent's training run and the `[chaos]` settings."""

    chaos: ChaosSettings = field(default_factory=ChaosSettings)
    ntk: NtkSettings = field(default_factory=NtkSettings)

    def validate(self) -> None:
        super().validate()
        self.ntk.validate()
        chaos = self.chaos
        for key in ("t0", "t1"):
            parse_setting(f"chaos.{key}", StepGrid.parse, getattr(chaos, key))
        require(math.isfinite(chaos.eps) and chaos.eps >= 0, "chaos.eps", chaos.eps, "must be zero or positive")
        require(
            chaos.eps > 0 or chaos.perturbation == "none", "chaos.eps", chaos.eps,
            "must be positive unless the perturbation is none",
        )
        require(
            2 <= chaos.alpha_points <= MAX_ALPHA_POINTS, "chaos.alpha_points", chaos.alpha_points,
            f"must be from 2 (0 and 1) to {MAX_ALPHA_POINTS}, since each point evaluates the test set once per twin and t1",
        )
        require(chaos.bn_batches >= 0, "chaos.bn_batches", chaos.bn_batches, "cannot be negative")
        require(chaos.test_subset >= 0, "chaos.test_subset", chaos.test_subset, "cannot be negative")
        require(0 <= chaos.perturbation_seed < MAX_SEED, "chaos.perturbation_seed", chaos.perturbation_seed, "must lie in [0, 2**63)")
        require(bool(chaos.metrics), "chaos.metrics", list(chaos.metrics), "must name at least one metric")
        require(len(set(chaos.metrics)) == len(chaos.metrics), "chaos.metrics", list(chaos.metrics), "must not repeat a metric")
        require(all(0 <= seed < MAX_SEED for seed in chaos.seeds), "chaos.seeds", list(chaos.seeds), "must lie in [0, 2**63)")
        require(len(set(chaos.seeds)) == len(chaos.seeds), "chaos.seeds", list(chaos.seeds), "must not repeat a seed")
        require(chaos.transition_threshold > 0, "chaos.transition_threshold", chaos.transition_threshold, "must be positive")
