"""Configuration of the cone experiment: the training run plus the `[cone]` and `[ntk]` tables."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from twophase.core.config import NtkSettings, RunConfig, parse_setting, require, with_help
from twophase.core.errors import ConfigError
from twophase.core.run import resolve_step_list
from twophase.core.steps import Step

if TYPE_CHECKING:
    from twophase.core.run import RunPlan

logger = logging.getLogger(__name__)

DEFAULT_METRICS = ("kernel_distance", "param_cosine")


@dataclass(frozen=True)
class ConeSettings:
    """The `[cone]` table: where the states come from, what is compared, which views are drawn."""

    from_run: str | None = field(default=None, metadata=with_help("output folder of a finished `twophase train` run whose checkpoints to use instead of training"))
    metrics: tuple[str, ...] = field(default=DEFAULT_METRICS, metadata=with_help("metrics compared over all pairs of checkpoints"))
    dts: tuple[str, ...] = field(default=("1ep",), metadata=with_help("offsets dt of the S(t, t + dt) views; the states at t + dt are added to the checkpoints"))
    taus: tuple[str, ...] = field(default=(), metadata=with_help("reference steps tau of the S(tau, t) views; default: five checkpoints spread over the grid"))


@dataclass(frozen=True)
class ConeConfig(RunConfig):
    """A cone experiment: the training run, the `[cone]` settings and the eNTK settings."""

    cone: ConeSettings = field(default_factory=ConeSettings)
    ntk: NtkSettings = field(default_factory=NtkSettings)

    def validate(self) -> None:
        super().validate()
        self.ntk.validate()
        cone = self.cone
        require(bool(cone.metrics), "cone.metrics", list(cone.metrics), "must name at least one metric")
        require(len(set(cone.metrics)) == len(cone.metrics), "cone.metrics", list(cone.metrics), "must not repeat a metric")
        for dt in cone.dts:
            step = parse_setting("cone.dts", Step.parse, dt)
            require(not step.is_end and step.iterations != 0 and step.epochs != 0, "cone.dts", dt, "must be a positive number of steps or epochs")
        for tau in cone.taus:
            parse_setting("cone.taus", Step.parse, tau)
        require(cone.from_run is None or bool(cone.from_run.strip()), "cone.from_run", cone.from_run, "must name a folder")

    def check_plan(self, plan: RunPlan) -> None:
        """Check that the dts and taus lie within training and that every tau is a compared state."""
        total = plan.total_steps
        # The default dt of one epoch can exceed a short run. It then only leaves the offset
        # view empty, so it is not an error.
        default_dts = self.cone.dts == ConeSettings().dts
        dts = resolve_step_list("cone.dts", self.cone.dts, plan.steps_per_epoch, total, allow_past_end=default_dts)
        late = [dt for dt in dts if dt > total]
        if late:
            logger.warning(
                "the default dt of %s is step(s) %s, past the end of training at step %d, so S(t, t + dt) stays empty; "
                "set cone.dts (--dts) to see it", ",".join(self.cone.dts), late, total,
            )
        taus = resolve_step_list("cone.taus", self.cone.taus, plan.steps_per_epoch, total)

        # The experiment compares the checkpoints and, when it trains the run itself, the
        # states at t + dt. A run given as from_run has only its own checkpoints.
        states = set(plan.checkpoints)
        if self.cone.from_run is None:
            states.update(step + dt for step in plan.checkpoints for dt in dts if step + dt <= total)
        missing = [tau for tau in taus if tau not in states]
        if missing:
            listed = sorted(states)
            preview = ", ".join(str(step) for step in listed[:12]) + (", ..." if len(listed) > 12 else "")
            raise ConfigError(
                f"invalid value for cone.taus: step(s) {missing} are not among the compared states, so "
                f"S(tau, t) has no row for them; pick taus from the steps {preview}"
            )
