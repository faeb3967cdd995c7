"""Command-line options shared by the commands that train, and their config keys.

Each option defaults to None, meaning "not given", so that the config file's value
or the dataclass default stays in place. `run_overrides` maps the given options to
dotted config keys.
"""

from __future__ import annotations

import functools
import inspect
import math
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from twophase.core.config import RunConfig
from twophase.core.errors import ConfigError, UsageError

def default_of(dotted: str, kind: type[RunConfig] = RunConfig) -> str:
    """Return ' Default: VALUE.' for a config key, for help texts."""
    section, key = dotted.split(".")
    value = kind().to_dict()[section][key]
    default_text = ",".join(str(item) for item in value) if isinstance(value, list) else value
    return f" Default: {default_text}."


DATA = "Data"
MODEL = "Model"
OPTIMIZER = "Optimizer"
TRAINING = "Training"

NoProgress = Annotated[bool, typer.Option("--no-progress", help="Log a status line every 30 s instead of drawing a progress bar.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")]
ConfigOption = Annotated[Path | None, typer.Option("--config", help="TOML config file; flags given on the command line override its values.")]
ModelName = Annotated[str | None, typer.Option("--model", help="Model: resnet20, vgg16, mlp, cnn, timm:NAME or torchvision:NAME." + default_of("model.name"), rich_help_panel=MODEL)]
Width = Annotated[int | None, typer.Option("--width", help="Width of built-in models: channels of the first stage (resnet20: 16, vgg16: 64, cnn: 32) or hidden units (mlp: 256).", rich_help_panel=MODEL)]
ModelOptions = Annotated[list[str] | None, typer.Option("--model-option", help="Extra model option KEY=VALUE; repeat for several.", rich_help_panel=MODEL)]
DatasetName = Annotated[str | None, typer.Option("--dataset", help="Data set: digits, synthetic, cifar10, cifar100 or imagefolder." + default_of("data.name"), rich_help_panel=DATA)]
DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Folder that contains the data set.", rich_help_panel=DATA)]
Download = Annotated[bool | None, typer.Option("--download/--no-download", help="Download the data set into --data-dir if it is missing.", rich_help_panel=DATA)]
Augmentation = Annotated[str | None, typer.Option("--augmentation", help="Training augmentation: flip-crop, none, or auto (the data set's default)." + default_of("data.augmentation"), rich_help_panel=DATA)]
DataOptions = Annotated[list[str] | None, typer.Option("--data-option", help="Extra data set option KEY=VALUE, such as train_size=512; repeat for several.", rich_help_panel=DATA)]
CacheDir = Annotated[Path | None, typer.Option("--cache-dir", help="Folder for decoded-image caches. Default: $TWOPHASE_CACHE_DIR, else $XDG_CACHE_HOME/twophase, else ~/.cache/twophase.", rich_help_panel=DATA)]
LearningRate = Annotated[float | None, typer.Option("--lr", help="Initial learning rate." + default_of("optimizer.lr"), rich_help_panel=OPTIMIZER)]
Momentum = Annotated[float | None, typer.Option("--momentum", help="SGD momentum, in [0, 1)." + default_of("optimizer.momentum"), rich_help_panel=OPTIMIZER)]
WeightDecay = Annotated[float | None, typer.Option("--weight-decay", help="L2 weight decay." + default_of("optimizer.weight_decay"), rich_help_panel=OPTIMIZER)]
Nesterov = Annotated[bool | None, typer.Option("--nesterov/--no-nesterov", help="Use Nesterov momentum.", rich_help_panel=OPTIMIZER)]
Milestones = Annotated[str | None, typer.Option("--milestones", help="Steps or epochs where the learning rate is multiplied by --lr-factor, such as 80ep,120ep; 'none' for a constant rate." + default_of("optimizer.milestones"), rich_help_panel=OPTIMIZER)]
LearningRateFactor = Annotated[float | None, typer.Option("--lr-factor", help="Factor applied to the learning rate at each milestone." + default_of("optimizer.lr_factor"), rich_help_panel=OPTIMIZER)]
Steps = Annotated[int | None, typer.Option("--steps", help="Length of training in optimizer steps.", rich_help_panel=TRAINING)]
Epochs = Annotated[float | None, typer.Option("--epochs", help="Length of training in epochs (an alternative to --steps)." + default_of("train.length"), rich_help_panel=TRAINING)]
BatchSize = Annotated[int | None, typer.Option("--batch-size", help="Training batch size." + default_of("train.batch_size"), rich_help_panel=TRAINING)]
InitSeed = Annotated[int | None, typer.Option("--init-seed", help="Seed of the parameter initialisation." + default_of("train.init_seed"), rich_help_panel=TRAINING)]
DataSeed = Annotated[int | None, typer.Option("--data-seed", help="Seed of batch order, augmentation and dropout." + default_of("train.data_seed"), rich_help_panel=TRAINING)]
Checkpoints = Annotated[str | None, typer.Option("--checkpoints", help="Step grid where states are saved and the test set is evaluated: 0,100,2000 or lin:0:end:11 or log:10:2000:8 or every:100 (steps; 5ep for epochs)." + default_of("train.checkpoints"), rich_help_panel=TRAINING)]
EvalBatchSize = Annotated[int | None, typer.Option("--eval-batch-size", help="Batch size when evaluating the test set." + default_of("train.eval_batch_size"), rich_help_panel=TRAINING)]
Device = Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda." + default_of("train.device"), rich_help_panel=TRAINING)]
Deterministic = Annotated[bool | None, typer.Option("--deterministic/--no-deterministic", help="On CUDA: deterministic algorithms, no cuDNN benchmark, no TF32 (default on).", rich_help_panel=TRAINING)]
ChannelsLast = Annotated[bool | None, typer.Option("--channels-last/--no-channels-last", help="Channels-last memory format for convolutions (default on; faster on CPU).", rich_help_panel=TRAINING)]


def parse_key_values(items: list[str] | None, option: str, example: str) -> dict[str, Any] | None:
    """Parse KEY=VALUE items; VALUE is read as a TOML value (3, 0.5, true) or else as text."""
    if not items:
        return None
    result: dict[str, Any] = {}
    for item in items:
        key, equals, raw = item.partition("=")
        key = key.strip()
        if not equals or not key:
            raise UsageError(f"invalid {option} {item!r}: expected KEY=VALUE, such as {example}")
        try:
            result[key] = tomllib.loads(f"value = {raw.strip()}")["value"]
        except tomllib.TOMLDecodeError:
            result[key] = raw.strip()
    return result


def length_override(steps: int | None, epochs: float | None) -> str | None:
    """Turn --steps or --epochs into the config's length text."""
    if steps is not None and epochs is not None:
        raise UsageError("give either --steps or --epochs, not both")
    if steps is not None:
        return str(steps)
    if epochs is not None:
        if not math.isfinite(epochs):
            raise ConfigError(f"invalid value for --epochs: {epochs} is not a finite number")
        if epochs <= 0:
            raise ConfigError(f"invalid value for --epochs: {epochs} must be positive")
        return f"{epochs:g}ep"
    return None


def milestones_override(text: str | None) -> list[str] | None:
    if text is None:
        return None
    if text.strip().lower() in ("", "none"):
        return []
    return [part.strip() for part in text.split(",")]


def run_overrides(
    *,
    model: str | None = None,
    width: int | None = None,
    model_option: list[str] | None = None,
    dataset: str | None = None,
    data_dir: Path | None = None,
    download: bool | None = None,
    augmentation: str | None = None,
    data_option: list[str] | None = None,
    cache_dir: Path | None = None,
    lr: float | None = None,
    momentum: float | None = None,
    weight_decay: float | None = None,
    nesterov: bool | None = None,
    milestones: str | None = None,
    lr_factor: float | None = None,
    steps: int | None = None,
    epochs: float | None = None,
    batch_size: int | None = None,
    init_seed: int | None = None,
    data_seed: int | None = None,
    checkpoints: str | None = None,
    eval_batch_size: int | None = None,
    device: str | None = None,
    deterministic: bool | None = None,
    channels_last: bool | None = None,
) -> dict[str, Any]:
    """Map the shared options to dotted config keys; options not given map to None."""
    return {
        "model.name": model,
        "model.width": width,
        "model.options": parse_key_values(model_option, "--model-option", "depth=2"),
        "data.name": dataset,
        "data.data_dir": str(data_dir) if data_dir is not None else None,
        "data.download": download,
        "data.augmentation": augmentation,
        "data.options": parse_key_values(data_option, "--data-option", "train_size=512"),
        "data.cache_dir": str(cache_dir) if cache_dir is not None else None,
        "optimizer.lr": lr,
        "optimizer.momentum": momentum,
        "optimizer.weight_decay": weight_decay,
        "optimizer.nesterov": nesterov,
        "optimizer.milestones": milestones_override(milestones),
        "optimizer.lr_factor": lr_factor,
        "train.length": length_override(steps, epochs),
        "train.batch_size": batch_size,
        "train.init_seed": init_seed,
        "train.data_seed": data_seed,
        "train.checkpoints": checkpoints,
        "train.eval_batch_size": eval_batch_size,
        "train.device": device,
        "train.deterministic": deterministic,
        "train.channels_last": channels_last,
    }


RUN_OPTIONS: dict[str, Any] = {
    "model": ModelName,
    "width": Width,
    "model_option": ModelOptions,
    "dataset": DatasetName,
    "data_dir": DataDir,
    "download": Download,
    "augmentation": Augmentation,
    "data_option": DataOptions,
    "cache_dir": CacheDir,
    "lr": LearningRate,
    "momentum": Momentum,
    "weight_decay": WeightDecay,
    "nesterov": Nesterov,
    "milestones": Milestones,
    "lr_factor": LearningRateFactor,
    "steps": Steps,
    "epochs": Epochs,
    "batch_size": BatchSize,
    "init_seed": InitSeed,
    "data_seed": DataSeed,
    "checkpoints": Checkpoints,
    "eval_batch_size": EvalBatchSize,
    "device": Device,
    "deterministic": Deterministic,
    "channels_last": ChannelsLast,
}

F = TypeVar("F", bound=Callable[..., Any])


def with_run_options(command: F) -> F:
    """Add the training options to a command, which receives their config overrides.

    The command declares a parameter `run_overrides` instead of the 25 options. Typer
    reads the options from the wrapper's signature.
    """
    # eval_str resolves the command's string annotations (postponed by
    # `from __future__ import annotations`), which Typer needs as objects.
    signature = inspect.signature(command, eval_str=True)
    own = [parameter for parameter in signature.parameters.values() if parameter.name != "run_overrides"]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
        for name, annotation in RUN_OPTIONS.items()
    ]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name in RUN_OPTIONS}
        return command(run_overrides=run_overrides(**values), **kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*own, *added])  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]
