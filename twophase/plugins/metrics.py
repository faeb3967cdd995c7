"""Built-in metrics, registered through `register_metrics` and computed in `measure`.

For states i and j with flattened parameters u and v:

- param_cosine: C = 1 - cos(u, v), computed in float64 as 0.5 * |u/|u| - v/|v||^2,
  which equals 1 - cos without the cancellation of 1 - <u, v>/(|u||v|) for close states;
- param_distance: |u - v| in float64;
- loss_barrier: B = max over alpha of L(alpha u + (1 - alpha) v) - (L(u) + L(v)) / 2
  on the test set, over an alpha grid with 0 and 1 included;
- error_barrier: the same with the test error;
- disagreement: the fraction of test inputs whose argmax predictions differ.
"""

from __future__ import annotations

import numpy as np

from twophase import hookimpl
from twophase.core.measure import MeasurementContext, cosine_dissimilarity
from twophase.core.specs import MetricSpec
from twophase.core.state import TrainingState

BOTH = ("chaos", "cone")
METRICS = [
    MetricSpec("param_cosine", "parameter cosine dissimilarity 1 - cos(u, v)", "1", BOTH, "C, in float64"),
    MetricSpec("param_distance", "parameter distance |u - v|", "1", BOTH, "L2 distance of the parameter vectors"),
    MetricSpec("loss_barrier", "test loss barrier", "nats", ("chaos",), "B, max over the line minus the endpoints' mean"),
    MetricSpec("error_barrier", "test error barrier", "1", ("chaos",), "the barrier of the test error"),
    MetricSpec("disagreement", "test disagreement rate", "1", ("chaos",), "D, fraction of test inputs with different argmax"),
]
_NAMES = {spec.name for spec in METRICS}


@hookimpl
def register_metrics() -> list[MetricSpec]:
    """Register C, parameter distance, B, the error barrier and D."""
    return list(METRICS)


@hookimpl
def measure(a: TrainingState, b: TrainingState, context: MeasurementContext) -> dict[str, float] | None:
    """Compute the requested built-in metrics for the pair (a, b)."""
    requested = _NAMES.intersection(context.requested)
    if not requested:
        return None
    values: dict[str, float] = {}

    if {"param_cosine", "param_distance"} & requested:
        u, v = context.parameter_vector(a), context.parameter_vector(b)
        if "param_cosine" in requested:
            values["param_cosine"] = cosine_dissimilarity(u, v)
        if "param_distance" in requested:
            values["param_distance"] = float((u - v).norm())

    if "disagreement" in requested:
        predictions_a = context.test_outputs(a).predictions
        predictions_b = context.test_outputs(b).predictions
        values["disagreement"] = float((predictions_a != predictions_b).double().mean())

    if {"loss_barrier", "error_barrier"} & requested:
        losses, errors = interpolation_curves(a, b, context)
        if "loss_barrier" in requested:
            values["loss_barrier"] = barrier(losses)
            context.curves["loss_barrier"] = losses
        if "error_barrier" in requested:
            values["error_barrier"] = barrier(errors)
            context.curves["error_barrier"] = errors
    return values


def barrier(curve: np.ndarray) -> float:
    """Return the maximum of a curve over alpha minus the mean of its endpoints."""
    return float(np.max(curve) - (curve[0] + curve[-1]) / 2)


def interpolation_curves(a: TrainingState, b: TrainingState, context: MeasurementContext) -> tuple[np.ndarray, np.ndarray]:
    """Return test loss and test error along alpha * a + (1 - alpha) * b for every alpha.

    The endpoints come from the context's per-state cache; only interior points are
    evaluated per pair. Both curves come from one pass over the grid.
    """
    alphas = context.alphas
    losses = np.empty(len(alphas))
    errors = np.empty(len(alphas))
    for index, alpha in enumerate(alphas):
        if alpha == 0.0:
            outputs = context.endpoint_outputs(b)
        elif alpha == 1.0:
            outputs = context.endpoint_outputs(a)
        else:
            outputs = context.interpolated_outputs(a, b, float(alpha))
        losses[index] = outputs.loss
        errors[index] = outputs.error
    return losses, errors
