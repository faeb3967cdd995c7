"""A twophase plugin with one metric and one perturbation.

- `symmetric_kl`: the symmetric KL divergence between the two states' softmax outputs
  on the test set, averaged over test inputs, in nats. Each state's log-probabilities
  are its costly part; the measurement context caches them per state.
- `rademacher`: every perturbed coordinate moves by +d or -d with a seeded random sign,
  with d chosen so that the perturbation's L2 norm is eps.

twophase finds this module through the `twophase` entry point in pyproject.toml.
"""

from __future__ import annotations

import math

import torch

from twophase import hookimpl
from twophase.core.specs import MetricSpec, PerturbationSpec

SYMMETRIC_KL = MetricSpec(
    name="symmetric_kl",
    long_name="symmetric KL divergence of the test softmax outputs",
    units="nats",
    experiments=("chaos", "cone"),
    summary="KL(p_a || p_b) + KL(p_b || p_a), averaged over test inputs",
)
RADEMACHER = PerturbationSpec("rademacher", "every coordinate moves by +d or -d, global L2 norm eps")


@hookimpl
def register_metrics() -> list[MetricSpec]:
    return [SYMMETRIC_KL]


@hookimpl
def register_perturbations() -> list[PerturbationSpec]:
    return [RADEMACHER]


@hookimpl
def measure(a, b, context) -> dict[str, float] | None:
    """Return the symmetric KL divergence between a's and b's test predictions."""
    if SYMMETRIC_KL.name not in context.requested:
        return None
    log_p = context.summary(a, "log_softmax", lambda state: log_probabilities(context, state))
    log_q = context.summary(b, "log_softmax", lambda state: log_probabilities(context, state))
    divergence = ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(dim=1).mean()
    return {SYMMETRIC_KL.name: float(divergence)}


@hookimpl
def perturb(state, spec, generator: torch.Generator) -> dict[str, torch.Tensor] | None:
    """Draw a Rademacher perturbation of L2 norm spec.eps over the requested parameters."""
    if spec.kind != RADEMACHER.name:
        return None
    count = sum(state.model[name].numel() for name in spec.parameters)
    step = spec.eps / math.sqrt(count)
    result = {}
    for name in spec.parameters:
        shape = state.model[name].shape
        signs = torch.randint(0, 2, shape, generator=generator, dtype=torch.int64) * 2 - 1
        result[name] = signs.to(torch.float64) * step
    return result


def log_probabilities(context, state) -> torch.Tensor:
    """Return the state's log-softmax on the measuring test set, in float64."""
    return torch.log_softmax(context.test_outputs(state).logits.double(), dim=1)
