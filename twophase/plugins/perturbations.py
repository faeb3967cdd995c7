"""Built-in perturbations, registered through `register_perturbations` and `perturb`.

Every kind draws from the generator it is given and returns float64 tensors, so that
the size of the perturbation is exact before it is cast to the parameters' dtype.
"""

from __future__ import annotations

import torch

from twophase import hookimpl
from twophase.core.perturbation import PerturbationRequest
from twophase.core.specs import PerturbationSpec
from twophase.core.state import TrainingState

KINDS = {
    "gaussian": "isotropic Gaussian direction with global L2 norm eps",
    "relative": "isotropic Gaussian direction with L2 norm eps times the parameters' norm",
    "layerwise": "each parameter tensor gets an isotropic direction with norm eps times its own norm",
    "coordinate": "one seeded coordinate changes by eps",
    "none": "no perturbation",
}


@hookimpl
def register_perturbations() -> list[PerturbationSpec]:
    """Register gaussian, relative, layerwise, coordinate and none."""
    return [PerturbationSpec(name, summary) for name, summary in KINDS.items()]


@hookimpl
def perturb(state: TrainingState, spec: PerturbationRequest, generator: torch.Generator) -> dict[str, torch.Tensor] | None:
    """Draw the perturbation of a built-in kind; return None for kinds of other plugins."""
    if spec.kind not in KINDS:
        return None
    # contiguous(): channels-last weights would otherwise give channels-last deltas,
    # whose flat index order differs from the parameter's logical order.
    parameters = {name: state.model[name].detach().to(torch.float64).cpu().contiguous() for name in spec.parameters}

    if spec.kind == "none":
        return {name: torch.zeros_like(value) for name, value in parameters.items()}
    if spec.kind == "coordinate":
        return _one_coordinate(parameters, spec.eps, generator)
    if spec.kind == "layerwise":
        return {name: _direction(value.shape, generator) * spec.eps * value.norm() for name, value in parameters.items()}

    directions = {name: _direction(value.shape, generator, normalise=False) for name, value in parameters.items()}
    total_norm = torch.sqrt(sum(direction.square().sum() for direction in directions.values()))
    scale = spec.eps / total_norm
    if spec.kind == "relative":
        scale = scale * torch.sqrt(sum(value.square().sum() for value in parameters.values()))
    return {name: direction * scale for name, direction in directions.items()}


def _direction(shape: torch.Size, generator: torch.Generator, normalise: bool = True) -> torch.Tensor:
    """Draw a standard Gaussian tensor in float64, scaled to unit norm if `normalise`."""
    direction = torch.randn(shape, generator=generator, dtype=torch.float64)
    return direction / direction.norm() if normalise else direction


def _one_coordinate(parameters: dict[str, torch.Tensor], eps: float, generator: torch.Generator) -> dict[str, torch.Tensor]:
    sizes = [value.numel() for value in parameters.values()]
    index = int(torch.randint(0, sum(sizes), (1,), generator=generator))
    result = {}
    for (name, value), size in zip(parameters.items(), sizes, strict=True):
        change = torch.zeros_like(value)
        if 0 <= index < size:
            change.view(-1)[index] = eps
        index -= size
        result[name] = change
    return result
