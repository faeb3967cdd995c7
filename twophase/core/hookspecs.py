"""Hook specifications of the `twophase` plugin system.

Plugins implement these functions, marked with `twophase.hookimpl`, and register through
the `twophase` entry-point group. The host calls every hook with keyword arguments only.
Built-in models and data sets are registered through the same hooks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import torch

    from twophase.core.run import Run
    from twophase.core.specs import DatasetSpec, MetricSpec, ModelSpec, PerturbationSpec
    from twophase.core.state import TrainingState

PROJECT_NAME = "twophase"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)


@hookspec
def register_models() -> list[ModelSpec]:
    """Register models.

    Called once when the plugin manager builds its registry.

    Returns:
        The `ModelSpec` of each model this plugin can build. A name may be registered by
        one plugin only.
    """


@hookspec
def register_datasets() -> list[DatasetSpec]:
    """Register data sets.

    Called once when the plugin manager builds its registry.

    Returns:
        The `DatasetSpec` of each data set this plugin can load. A name may be
        registered by one plugin only.
    """


@hookspec
def register_perturbations() -> list[PerturbationSpec]:
    """Register perturbation kinds.

    Called once when the plugin manager builds its registry. The plugin that registers
    a kind must also implement `perturb` for it.

    Returns:
        The `PerturbationSpec` of each kind this plugin owns.
    """


@hookspec
def register_metrics() -> list[MetricSpec]:
    """Register metric descriptions.

    Called once when the plugin manager builds its registry. The plugin that registers
    a metric must return its values from `measure`.

    Returns:
        The `MetricSpec` (name, long name, units, experiments) of each metric this
        plugin owns.
    """


@hookspec
def on_run_start(run: Run) -> None:
    """Called when a run starts or resumes, before its first optimizer step.

    Args:
        run: the run; `run.step` is the step it starts from (0 for a new run) and
            `run.plan.total_steps` the step where it ends.
    """


@hookspec
def on_step(run: Run, step: int, loss: float) -> None:
    """Called after each optimizer step of every run, parent and twins alike.

    Args:
        run: the run that took the step.
        step: the number of optimizer steps this run has completed, from 1.
        loss: the training loss of the batch that this step used, before the update.
    """


@hookspec
def on_checkpoint(run: Run, step: int, state: TrainingState) -> None:
    """Called at each checkpoint step, before anything is measured.

    In `train`, the steps of the checkpoint grid. In chaos, every t1, once for the
    parent and once for each twin that has not diverged.

    Args:
        run: the run at the checkpoint.
        step: the checkpoint step.
        state: a copy of the run's training state at `step`; changing it does not
            change the run.
    """


@hookspec
def on_run_end(run: Run) -> None:
    """Called once when a run has reached its last step.

    Not called when a run stops early on an error or an interrupt.

    Args:
        run: the finished run.
    """


@hookspec(firstresult=True)
def perturb(state: TrainingState, spec: Any, generator: torch.Generator) -> Any:
    """Compute the perturbation of a twin's parameters.

    Called once per twin, when it branches. The first non-None result wins, so only the
    plugin that owns `spec.kind` should return one.

    Args:
        state: the parent's training state at the branching step; read only.
        spec: the perturbation request; `spec.kind` names the perturbation.
        generator: the seeded random generator that the perturbation must draw from.

    Returns:
        A mapping from parameter name to the perturbation tensor for that parameter,
        or None when this plugin does not own `spec.kind`.
    """


@hookspec
def measure(a: TrainingState, b: TrainingState, context: Any) -> dict[str, float] | None:
    """Measure metrics between two training states.

    Called for every pair that an experiment compares. Each metric plugin returns the
    values of the metrics it owns among `context.requested`.

    Args:
        a: the first state (the parent in chaos, the state at tau in cone).
        b: the second state (the twin in chaos, the state at t in cone).
        context: the measurement context: the requested metric names and a per-state
            cache of costly summaries (eNTK, test logits).

    Returns:
        A mapping from metric name to value, or None when none of this plugin's
        metrics is requested.
    """
