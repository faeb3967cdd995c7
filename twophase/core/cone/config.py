"""Configuration of the cone experiment: the training run plus the `[cone]` and `[ntk]` tables."""

from __future__ import annotations

from dataclasses import dataclass, field

from twophase.core.config import NtkSettings, RunConfig, parse_setting, require, with_help
from twophase.core.steps import Step

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
