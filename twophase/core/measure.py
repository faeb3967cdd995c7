"""The measurement context: test-set evaluation of states and of states in between.

Metrics ask the context for costly per-state summaries (test logits, parameter
vectors, BatchNorm-recomputed endpoint losses). The context caches them per state, so
each state's summary is computed once however many pairs it takes part in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from twophase.core.config import NtkSettings
from twophase.core.data import ImageData
from twophase.core.errors import ConfigError, PluginError
from twophase.core.ntk import NtkPlan, empirical_ntk, plan_ntk
from twophase.core.state import TrainingState
from twophase.core.stream import seeded_generator, seeded_global_generators

logger = logging.getLogger(__name__)

_BATCHNORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)

# Tags of the seed sequences that pick the BatchNorm batches and the test subset, and
# the eNTK inputs, kept apart from the data stream's batch order, augmentation and dropout.
_MEASURE_STREAM = 3
_NTK_STREAM = 4


def cosine_dissimilarity(u: torch.Tensor, v: torch.Tensor) -> float:
    """Return 1 - cos(u, v) of two flattened tensors as 0.5 * |u/|u| - v/|v||^2, in float64.

    The direct form 1 - <u, v>/(|u||v|) cancels to exactly 0 for nearly parallel
    vectors; the squared difference of the unit vectors keeps its digits.
    """
    u, v = u.reshape(-1).double(), v.reshape(-1).double()
    return float(0.5 * (u / u.norm() - v / v.norm()).square().sum())


@dataclass(frozen=True)
class TestOutputs:
    """A network's outputs on the measuring test set."""

    logits: torch.Tensor
    loss: float
    error: float

    @property
    def predictions(self) -> torch.Tensor:
        return self.logits.argmax(dim=1)


@dataclass(frozen=True)
class MeasureSettings:
    """Settings of state evaluation: test subset, BatchNorm recomputation, barrier grid."""

    test_subset: int = 0
    bn_batches: int = 10
    bn_batch_size: int = 128
    alpha_points: int = 11
    eval_batch_size: int = 1000
    seed: int = 0


class StateEvaluator:
    """Evaluate parameter sets on a fixed test subset, in a scratch copy of the model.

    `normalise` turns uint8 images into the model's input. With `settings.bn_batches`
    > 0, BatchNorm statistics are recomputed before evaluation: reset, then a
    cumulative average over a fixed set of training batches in train mode, without
    gradients.
    """

    def __init__(
        self,
        model: nn.Module,
        data: ImageData,
        normalise: Callable[[torch.Tensor], torch.Tensor],
        settings: MeasureSettings,
    ) -> None:
        self.model = model
        self.normalise = normalise
        self.settings = settings
        self.has_batchnorm = any(isinstance(module, _BATCHNORM_TYPES) for module in model.modules())

        test_count = int(data.test_images.shape[0])
        if settings.test_subset and settings.test_subset < test_count:
            order = torch.randperm(test_count, generator=seeded_generator(settings.seed, _MEASURE_STREAM, 0))
            index = order[: settings.test_subset].sort().values.to(data.test_images.device)
            self.test_images, self.test_labels = data.test_images[index], data.test_labels[index]
        else:
            self.test_images, self.test_labels = data.test_images, data.test_labels

        self.bn_images: list[torch.Tensor] = []
        if self.has_batchnorm and settings.bn_batches > 0:
            train_count = int(data.train_images.shape[0])
            order = torch.randperm(train_count, generator=seeded_generator(settings.seed, _MEASURE_STREAM, 1))
            size = min(settings.bn_batch_size, train_count)
            for start in range(0, min(settings.bn_batches * size, train_count), size):
                index = order[start : start + size].to(data.train_images.device)
                self.bn_images.append(data.train_images[index])

    @property
    def recomputes_batchnorm(self) -> bool:
        return bool(self.bn_images)

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(tensors)

    @torch.no_grad()
    def outputs(self, recompute_batchnorm: bool) -> TestOutputs:
        """Evaluate the loaded tensors in eval mode, after recomputing BatchNorm if asked."""
        if recompute_batchnorm and self.recomputes_batchnorm:
            self._recompute_batchnorm()
        self.model.eval()
        chunks = []
        batch_size = self.settings.eval_batch_size
        for start in range(0, self.test_images.shape[0], batch_size):
            chunks.append(self.model(self.normalise(self.test_images[start : start + batch_size])).float())
        logits = torch.cat(chunks)
        loss = F.cross_entropy(logits.double(), self.test_labels, reduction="mean").item()
        error = (logits.argmax(dim=1) != self.test_labels).double().mean().item()
        return TestOutputs(logits=logits, loss=loss, error=error)

    def _recompute_batchnorm(self) -> None:
        layers = [module for module in self.model.modules() if isinstance(module, _BATCHNORM_TYPES)]
        momenta = [layer.momentum for layer in layers]
        for layer in layers:
            layer.reset_running_stats()
            # momentum None makes the running statistics a cumulative average of the batches.
            layer.momentum = None
        self.model.train()
        # Dropout in train mode would make the statistics random; a fixed seed keeps them
        # a function of the parameters alone.
        device = self.bn_images[0].device
        with seeded_global_generators(self.settings.seed, device):
            for images in self.bn_images:
                self.model(self.normalise(images))
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum


class KernelSource:
    """Compute a state's eNTK on a fixed, seeded subset of training inputs.

    The inputs are normalised training images without augmentation; `plan` splits the
    computation under the memory budget of `settings.memory` MiB.
    """

    def __init__(
        self,
        model: nn.Module,
        data: ImageData,
        normalise: Callable[[torch.Tensor], torch.Tensor],
        settings: NtkSettings,
    ) -> None:
        train_count = int(data.train_images.shape[0])
        if settings.samples > train_count:
            raise ConfigError(
                f"invalid value for ntk.samples: {settings.samples} exceeds the {train_count} training "
                f"images of {data.name!r}; use at most {train_count}"
            )
        order = torch.randperm(train_count, generator=seeded_generator(settings.seed, _NTK_STREAM, 0))
        index = order[: settings.samples].sort().values.to(data.train_images.device)
        self.model = model
        self.inputs = normalise(data.train_images[index])
        self.indices = index
        parameters = sum(parameter.numel() for parameter in model.parameters())
        self.plan: NtkPlan = plan_ntk(settings.kind, settings.samples, data.num_classes, parameters, settings.memory * 2**20)

    def compute(self, state: TrainingState) -> torch.Tensor:
        """Return the state's eNTK in float64."""
        return empirical_ntk(self.model, state.model, state.parameters, self.inputs, self.plan)


@dataclass
class MeasurementContext:
    """The `context` argument of the `measure` hook.

    `requested` names the metrics to return. `summary(state, name, compute)` caches a
    per-state result; the built-in summaries are `test_outputs`, `endpoint_outputs`,
    `parameter_vector` and `kernel`. `curves` collects arrays that a metric records for
    the current pair (the barrier curves over `alphas`).
    """

    requested: tuple[str, ...]
    experiment: str
    evaluator: StateEvaluator
    alphas: np.ndarray
    kernels: KernelSource | None = None
    curves: dict[str, np.ndarray] = field(default_factory=dict)
    pair_cache: dict[str, Any] = field(default_factory=dict)
    _cache: dict[tuple[Hashable, str], Any] = field(default_factory=dict)
    computations: dict[str, int] = field(default_factory=dict)

    def summary(self, state: TrainingState, name: str, compute: Callable[[TrainingState], Any]) -> Any:
        """Return `compute(state)`, computed once per state and summary name."""
        key = (state_key(state), name)
        if key not in self._cache:
            self._cache[key] = compute(state)
            self.computations[name] = self.computations.get(name, 0) + 1
        return self._cache[key]

    def store_summary(self, state: TrainingState, name: str, value: Any) -> None:
        """Put a summary computed elsewhere (for example read from disk) into the cache."""
        self._cache[(state_key(state), name)] = value

    def test_outputs(self, state: TrainingState) -> TestOutputs:
        """Return the state's test outputs with its own BatchNorm statistics."""
        return self.summary(state, "test_outputs", lambda s: self._evaluate(s.model, recompute=False))

    def endpoint_outputs(self, state: TrainingState) -> TestOutputs:
        """Return the state's test outputs treated as a barrier endpoint (BatchNorm recomputed)."""
        if not self.evaluator.recomputes_batchnorm:
            return self.test_outputs(state)
        return self.summary(state, "endpoint_outputs", lambda s: self._evaluate(s.model, recompute=True))

    def parameter_vector(self, state: TrainingState) -> torch.Tensor:
        """Return the state's parameters as one float64 vector."""
        return self.summary(state, "parameter_vector", lambda s: s.parameter_vector())

    def kernel(self, state: TrainingState) -> torch.Tensor:
        """Return the state's eNTK (float64), computed once per state."""
        if self.kernels is None:
            raise PluginError("an eNTK was requested, but this experiment was set up without eNTK inputs")
        return self.summary(state, "kernel", self.kernels.compute)

    def interpolated_outputs(self, a: TrainingState, b: TrainingState, alpha: float) -> TestOutputs:
        """Evaluate the network alpha * a + (1 - alpha) * b, interpolated in float64.

        Floating-point buffers are interpolated too; with BatchNorm recomputation on,
        the running statistics are then replaced by recomputed ones.
        """
        tensors = {}
        for name, tensor_a in a.model.items():
            tensor_b = b.model[name]
            if tensor_a.is_floating_point():
                mixed = alpha * tensor_a.double() + (1.0 - alpha) * tensor_b.double()
                tensors[name] = mixed.to(tensor_a.dtype)
            else:
                tensors[name] = tensor_a
        return self._evaluate(tensors, recompute=True)

    def begin_pair(self) -> None:
        """Forget the previous pair's curves and pair-level results."""
        self.curves = {}
        self.pair_cache = {}

    def forget_states(self) -> None:
        """Drop every cached summary, for example when the states at a step are done."""
        self._cache.clear()

    def _evaluate(self, tensors: dict[str, torch.Tensor], recompute: bool) -> TestOutputs:
        self.evaluator.load(tensors)
        return self.evaluator.outputs(recompute_batchnorm=recompute)


def state_key(state: TrainingState) -> Hashable:
    """Identify a state by its run name and step, which the experiments keep unique."""
    return (state.metadata.get("run"), state.step)
