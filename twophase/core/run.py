"""A live training run: model, optimizer, step, and the plan resolved against the data."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from twophase.core.config import OptimizerConfig, RunConfig
from twophase.core.data import ImageData
from twophase.core.errors import ConfigError, GridError, PluginError, TwophaseError, UsageError
from twophase.core.plugins import Registry
from twophase.core.specs import ModelRequest
from twophase.core.state import TrainingState
from twophase.core.steps import Step, StepGrid
from twophase.core.stream import Batch, forward_seed, seed_global_generators, seeded_global_generators

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RunPlan:
    """Step counts of a run, resolved once the data set's size is known.

    `checkpoints` is the checkpoint grid with the last step added, so that every
    finished run ends with a saved state.
    """

    steps_per_epoch: int
    total_steps: int
    checkpoints: tuple[int, ...]
    milestones: tuple[int, ...]
    augmentation: str
    device: str

    def learning_rate(self, base: float, factor: float, step: int) -> float:
        """Return the learning rate of the update that step `step` (0-based) makes."""
        decays = sum(1 for milestone in self.milestones if step >= milestone)
        return base * factor**decays


def make_plan(config: RunConfig, steps_per_epoch: int, augmentation: str, device: torch.device) -> RunPlan:
    """Resolve length, milestones and checkpoint grid into integer steps."""
    total = _resolve("train.length", lambda: Step.parse(config.train.length).resolve(steps_per_epoch))
    if total <= 0:
        raise ConfigError(
            f"invalid value for train.length: {config.train.length!r} is {total} steps at "
            f"{steps_per_epoch} steps per epoch; train for at least 1 step"
        )
    # The default schedule (80ep, 120ep) stays valid for short runs, where its milestones
    # past the end have no effect. Milestones that the user sets must lie within training.
    default_milestones = config.optimizer.milestones == OptimizerConfig().milestones
    milestones = resolve_step_list(
        "optimizer.milestones", config.optimizer.milestones, steps_per_epoch, total, allow_past_end=default_milestones
    )
    grid = _resolve("train.checkpoints", lambda: StepGrid.parse(config.train.checkpoints).resolve(steps_per_epoch, total))

    late = [m for m in milestones if m >= total]
    if late:
        logger.info("learning-rate milestone(s) at step %s lie at or past the end of training (step %d) and have no effect", late, total)
    checkpoints = grid if grid and grid[-1] == total else (*grid, total)
    plan = RunPlan(
        steps_per_epoch=steps_per_epoch,
        total_steps=total,
        checkpoints=checkpoints,
        milestones=milestones,
        augmentation=augmentation,
        device=str(device),
    )
    config.check_plan(plan)
    return plan


def resolve_step_list(
    key: str, texts: Sequence[str], steps_per_epoch: int, total_steps: int, *, allow_past_end: bool = False
) -> tuple[int, ...]:
    """Resolve the step values of setting `key` into steps that increase strictly and lie within training.

    Raises ConfigError naming `key` when a value is malformed, the steps do not increase,
    or (unless `allow_past_end`) a step lies past `total_steps`.
    """
    steps = _resolve(key, lambda: tuple(Step.parse(text).resolve(steps_per_epoch, total_steps) for text in texts))
    if any(later <= earlier for earlier, later in zip(steps, steps[1:])):
        raise ConfigError(
            f"invalid value for {key}: {list(texts)} are steps {list(steps)} at {steps_per_epoch} steps "
            "per epoch; they must be strictly increasing"
        )
    late = [step for step in steps if step > total_steps]
    if late and not allow_past_end:
        raise ConfigError(
            f"invalid value for {key}: {list(texts)} are steps {list(steps)} at {steps_per_epoch} steps per "
            f"epoch, and step(s) {late} lie past the end of training at step {total_steps}; lower them or train longer"
        )
    return steps


def _resolve(key: str, resolve: Callable[[], T]) -> T:
    try:
        return resolve()
    except GridError as error:
        raise ConfigError(f"invalid value for {key}: {error}") from None


def build_model(registry: Registry, config: RunConfig, data: ImageData, device: torch.device) -> nn.Module:
    """Build the configured model with parameters drawn from `config.train.init_seed`.

    A forward pass on two test images checks that the model accepts the data set's
    shape, so that a mismatch fails here with the model named, not in the first step.
    """
    spec = registry.model(config.model.name)
    plugin = registry.models[spec.name].plugin
    request = ModelRequest(
        name=config.model.name,
        num_classes=data.num_classes,
        in_channels=data.in_channels,
        image_size=data.image_size,
        width=config.model.width,
        options=dict(config.model.options),
    )
    # Module constructors draw from the global CPU generator; forking keeps the caller's
    # random state untouched while making the initialisation a function of the seed.
    with seeded_global_generators(config.train.init_seed, torch.device("cpu")):
        try:
            model = spec.build(request)
        except TwophaseError:
            raise
        except Exception as error:
            raise PluginError(
                f"model {config.model.name!r} of plugin {plugin!r} failed to build with options "
                f"{dict(config.model.options)}: {type(error).__name__}: {error}"
            ) from error
    if not isinstance(model, nn.Module):
        raise PluginError(f"model {config.model.name!r} of plugin {plugin!r} built {type(model).__name__}, not a torch.nn.Module")

    model = model.to(device)
    if config.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    _check_forward(model, config, data, device)
    return model


def _check_forward(model: nn.Module, config: RunConfig, data: ImageData, device: torch.device) -> None:
    images = data.test_images[:2].to(device).float()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            logits = model(images)
    except Exception as error:
        height, width = data.image_size
        raise UsageError(
            f"model {config.model.name!r} fails on {data.in_channels}x{height}x{width} images of "
            f"{data.name!r}: {type(error).__name__}: {error}; pick a model for this input size or set "
            "its input size with --model-option (timm: img_size)"
        ) from None
    finally:
        model.train(was_training)
    if tuple(logits.shape) != (images.shape[0], data.num_classes):
        raise UsageError(
            f"model {config.model.name!r} returns outputs of shape {tuple(logits.shape)} for a batch of "
            f"{images.shape[0]}; expected ({images.shape[0]}, {data.num_classes}), one logit per class"
        )


def build_optimizer(model: nn.Module, config: RunConfig) -> torch.optim.SGD:
    settings = config.optimizer
    return torch.optim.SGD(
        model.parameters(),
        lr=settings.lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
        nesterov=settings.nesterov,
    )


class Run:
    """One member of training: a model, its optimizer and the number of steps taken.

    The train loop steps every run of an experiment (one for `train`, a parent and its
    twins for chaos) on the same batch. Hooks receive the run as `run`. `role` is
    `train`, `parent`, `twin` or `control`.
    """

    def __init__(
        self,
        name: str,
        config: RunConfig,
        plan: RunPlan,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        out_dir: Path | None = None,
        step: int = 0,
        role: str = "train",
    ) -> None:
        self.name = name
        self.role = role
        self.config = config
        self.plan = plan
        self.model = model
        self.optimizer = optimizer
        self.out_dir = out_dir
        self.step = step

    def state(self) -> TrainingState:
        """Return a copy of the current training state."""
        return TrainingState.capture(self.step, self.model, self.optimizer, run=self.name)

    def load_state(self, state: TrainingState) -> None:
        """Continue from `state`; the run keeps no reference to the state's tensors."""
        state.restore(self.model, self.optimizer)
        self.step = state.step

    def learning_rate(self) -> float:
        """Return the learning rate of the next update."""
        settings = self.config.optimizer
        return self.plan.learning_rate(settings.lr, settings.lr_factor, self.step)

    def train_on(self, batch: Batch) -> tuple[float, float]:
        """Take one optimizer step on `batch`; return its loss and accuracy before the update."""
        if batch.step != self.step:
            raise RuntimeError(f"run {self.name} is at step {self.step} but got the batch of step {batch.step}")
        learning_rate = self.learning_rate()
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate

        self.model.train()
        # Reseeding makes dropout and other random layers a function of (data seed, step),
        # the same for a parent and its twins and for a resumed run.
        seed_global_generators(forward_seed(self.config.train.data_seed, self.step), batch.images.device)
        logits = self.model(batch.images)
        loss = F.cross_entropy(logits, batch.labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1

        accuracy = (logits.detach().argmax(dim=1) == batch.labels).float().mean()
        loss_value, accuracy_value = torch.stack([loss.detach().float(), accuracy]).tolist()
        return loss_value, accuracy_value
