"""The eNTK metric: kernel distance between two states, registered like any plugin metric.

S = 1 - <H_a, H_b>_F / (|H_a|_F |H_b|_F), computed in float64 as half the squared
distance of the normalised, flattened kernels, so that close kernels keep their digits.
Each state's kernel comes from the measurement context's per-state cache.
"""

from __future__ import annotations

from twophase import hookimpl
from twophase.core.measure import MeasurementContext, cosine_dissimilarity
from twophase.core.specs import MetricSpec
from twophase.core.state import TrainingState

KERNEL_DISTANCE = MetricSpec(
    "kernel_distance",
    "eNTK kernel distance 1 - cos(H_a, H_b)",
    "1",
    ("chaos", "cone"),
    "S, between the states' empirical NTKs on a fixed subset of training inputs",
)


@hookimpl
def register_metrics() -> list[MetricSpec]:
    """Register the kernel distance S."""
    return [KERNEL_DISTANCE]


@hookimpl
def measure(a: TrainingState, b: TrainingState, context: MeasurementContext) -> dict[str, float] | None:
    """Return S between the eNTKs of a and b when it is requested."""
    if KERNEL_DISTANCE.name not in context.requested:
        return None
    return {KERNEL_DISTANCE.name: cosine_dissimilarity(context.kernel(a), context.kernel(b))}
