"""Perturbations of a twin's parameters, applied in float64 and recorded.

An L2 perturbation of 1e-7 spread over 0.27M float32 weights is about 2e-10 per
weight, below half a unit in the last place of most weights, so most coordinates
would not change at all. The perturbation is therefore added in float64 and cast
back, and the norm that survived the cast is recorded beside the one requested.
"""

from __future__ import annotations

import fnmatch
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from twophase.core.errors import PluginError, UsageError
from twophase.core.state import TrainingState

logger = logging.getLogger(__name__)

# A realized norm further than this fraction from the requested one gets a warning.
ROUNDING_WARNING_FRACTION = 0.1


@dataclass(frozen=True)
class PerturbationRequest:
    """The `spec` argument of the `perturb` hook: the kind, its size and the parameters to change.

    `eps` is the L2 norm (gaussian, coordinate) or the norm relative to the parameters'
    own norm (relative, layerwise). `parameters` lists the names of the parameters to
    perturb, in model order; the others stay unchanged.
    """

    kind: str
    eps: float
    parameters: tuple[str, ...]
    seed: int


@dataclass(frozen=True)
class PerturbationRecord:
    """The perturbation a twin got: the norm requested, the norm realized in float32, and how many coordinates changed.

    `changed_fraction` counts the coordinates whose value changed among those the
    perturbation touched (nonzero entries), so a fully swallowed perturbation gives 0.
    """

    requested_norm: float
    realized_norm: float
    changed_fraction: float


def select_parameters(parameters: Sequence[str], pattern: str) -> tuple[str, ...]:
    """Return the parameter names that match a comma-separated list of fnmatch patterns."""
    patterns = [part.strip() for part in pattern.split(",") if part.strip()]
    selected = tuple(name for name in parameters if any(fnmatch.fnmatchcase(name, p) for p in patterns))
    if not selected:
        examples = ", ".join(parameters[:5])
        raise UsageError(
            f"invalid perturbation parameters {pattern!r}: no parameter name matches; "
            f"names look like {examples}, and '*' selects all"
        )
    return selected


def apply_perturbation(state: TrainingState, delta: dict[str, torch.Tensor], step: int) -> PerturbationRecord:
    """Add `delta` to the state's parameters in float64, cast back in place, and record the result."""
    requested_squared = 0.0
    realized_squared = 0.0
    touched = 0
    changed = 0
    for name, change in delta.items():
        if name not in state.parameters:
            raise PluginError(f"perturbation returned {name!r}, which is not a parameter of the model")
        original = state.model[name]
        if change.shape != original.shape:
            raise PluginError(
                f"perturbation of {name!r} has shape {tuple(change.shape)}, the parameter {tuple(original.shape)}"
            )
        change = change.to(device=original.device, dtype=torch.float64)
        before = original.to(torch.float64)
        after = (before + change).to(original.dtype)
        difference = after.to(torch.float64) - before

        requested_squared += float(change.square().sum())
        realized_squared += float(difference.square().sum())
        nonzero = change != 0
        touched += int(nonzero.sum())
        changed += int((difference != 0)[nonzero].sum())
        original.copy_(after)

    record = PerturbationRecord(
        requested_norm=math.sqrt(requested_squared),
        realized_norm=math.sqrt(realized_squared),
        changed_fraction=changed / touched if touched else 0.0,
    )
    if record.requested_norm > 0:
        deviation = abs(record.realized_norm - record.requested_norm) / record.requested_norm
        if deviation > ROUNDING_WARNING_FRACTION:
            logger.warning(
                "perturbation at t0 = %d: float32 rounding changed its norm from %.3g to %.3g (%.0f%%); "
                "%.1f%% of the perturbed coordinates changed",
                step, record.requested_norm, record.realized_norm, 100 * deviation, 100 * record.changed_fraction,
            )
    return record
