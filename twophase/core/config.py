"""Run configuration: frozen dataclasses, read from TOML, overridden by the command line.

Precedence, lowest first: the dataclass defaults, the `--config` file, command-line
flags. Each field's `help` metadata is the text the CLI shows for its flag.

The defaults are the reference setup: SGD with momentum 0.9, weight decay 1e-4,
learning rate 0.1 divided by 10 at epochs 80 and 120, 160 epochs, batch 128.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import tomli_w

from twophase.core.errors import ConfigError, GridError
from twophase.core.steps import Step, StepGrid

if TYPE_CHECKING:
    from twophase.core.run import RunPlan

T = TypeVar("T")
C = TypeVar("C", bound="RunConfig")

MAX_SEED = 2**63
AUGMENTATIONS = ("auto", "flip-crop", "none")
DEVICES = ("auto", "cpu", "cuda")


def with_help(text: str) -> dict[str, str]:
    """Return field metadata that carries the help text of a config field."""
    return {"help": text}


@dataclass(frozen=True)
class ModelConfig:
    """The network to train."""

    name: str = field(default="resnet20", metadata=with_help("model name, such as resnet20, vgg16, mlp, cnn, timm:NAME, torchvision:NAME"))
    width: int | None = field(default=None, metadata=with_help("channel width of built-in models (resnet20: first stage, default 16)"))
    options: dict[str, Any] = field(default_factory=dict, metadata=with_help("extra model options, passed to the model builder"))


@dataclass(frozen=True)
class DataConfig:
    """The data set and its augmentation."""

    name: str = field(default="digits", metadata=with_help("data set name: digits, synthetic, cifar10, cifar100, imagefolder"))
    data_dir: str | None = field(default=None, metadata=with_help("folder that contains the data set"))
    download: bool = field(default=False, metadata=with_help("download the data set into data_dir if it is missing"))
    augmentation: str = field(default="auto", metadata=with_help("training augmentation: flip-crop, none, or auto (the data set's default)"))
    cache_dir: str | None = field(default=None, metadata=with_help("folder for decoded-image caches (default: ~/.cache/twophase)"))
    options: dict[str, Any] = field(default_factory=dict, metadata=with_help("extra data set options, passed to the loader"))


@dataclass(frozen=True)
class OptimizerConfig:
    """SGD with momentum and a multistep learning-rate schedule."""

    lr: float = field(default=0.1, metadata=with_help("initial learning rate"))
    momentum: float = field(default=0.9, metadata=with_help("SGD momentum"))
    weight_decay: float = field(default=1e-4, metadata=with_help("L2 weight decay"))
    nesterov: bool = field(default=False, metadata=with_help("use Nesterov momentum"))
    milestones: tuple[str, ...] = field(default=("80ep", "120ep"), metadata=with_help("steps where the learning rate is multiplied by lr_factor, such as 80ep,120ep"))
    lr_factor: float = field(default=0.1, metadata=with_help("factor applied to the learning rate at each milestone"))


@dataclass(frozen=True)
class TrainConfig:
    """Length, batch, seeds, checkpoints and device of a run."""

    length: str = field(default="160ep", metadata=with_help("length of training in steps (300) or epochs (160ep)"))
    batch_size: int = field(default=128, metadata=with_help("training batch size"))
    init_seed: int = field(default=0, metadata=with_help("seed of the parameter initialisation"))
    data_seed: int = field(default=0, metadata=with_help("seed of batch order and augmentation"))
    checkpoints: str = field(default="lin:0:end:11", metadata=with_help("step grid where states are saved and the test set is evaluated"))
    eval_batch_size: int = field(default=1000, metadata=with_help("batch size when evaluating the test set"))
    device: str = field(default="auto", metadata=with_help("auto, cpu or cuda"))
    deterministic: bool = field(default=True, metadata=with_help("on CUDA: deterministic algorithms, no cuDNN benchmark, no TF32"))
    channels_last: bool = field(default=True, metadata=with_help("store 4-D activations and weights channels-last (faster convolutions on CPU)"))


NTK_KINDS = ("trace", "full", "logit-sum")


@dataclass(frozen=True)
class NtkSettings:
    """The `[ntk]` table of the experiments: how the empirical NTK of a state is computed."""

    samples: int = field(default=500, metadata=with_help("training inputs of the eNTK, a fixed seeded subset"))
    kind: str = field(default="trace", metadata=with_help("eNTK kind: trace (n x n, summed over logits), full (nc x nc), logit-sum"))
    seed: int = field(default=0, metadata=with_help("seed of the eNTK's input subset"))
    memory: int = field(default=4096, metadata=with_help("memory budget of one eNTK computation, in MiB"))

    def validate(self) -> None:
        require(self.samples > 0, "ntk.samples", self.samples, "must be positive")
        require(self.kind in NTK_KINDS, "ntk.kind", self.kind, f"must be one of {', '.join(NTK_KINDS)}")
        require(0 <= self.seed < MAX_SEED, "ntk.seed", self.seed, "must lie in [0, 2**63)")
        require(self.memory > 0, "ntk.memory", self.memory, "must be positive")


@dataclass(frozen=True)
class RunConfig:
    """One training run: model, data, optimizer and training settings."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """Return the config as plain TOML-compatible data (tuples become lists)."""
        return _plain(dataclasses.asdict(self))

    def to_toml(self) -> str:
        """Return the config as TOML text that `load_config` reads back unchanged."""
        return tomli_w.dumps(_without_none(self.to_dict()))

    def validate(self) -> None:
        """Check ranges and choices that do not depend on the data set; raise ConfigError."""
        validate_config(self)

    def check_plan(self, plan: RunPlan) -> None:
        """Check the settings that need the run's step counts; raise ConfigError.

        A training run has none. Experiments override it for their own step settings, and
        `make_plan` calls it before anything is trained or written.
        """


def load_config(
    path: str | Path | None = None, overrides: Mapping[str, Any] | None = None, kind: type[C] = RunConfig
) -> C:
    """Read a config file (TOML) if given, apply dotted overrides, and validate.

    `overrides` maps dotted keys such as `optimizer.lr` to values; None values are
    ignored, so CLI flags that were not given leave the file's values in place.
    """
    data: dict[str, Any] = {}
    if path is not None:
        data = read_toml(Path(path))
        _reject_write_locations(data, str(path))
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        data.setdefault(section, {})
        if not isinstance(data[section], dict):
            raise _section_type_error(section, data[section], str(path))
        data[section][key] = value
    return config_from_dict(data, source=str(path) if path else "command line", kind=kind)


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file, turning every failure into a one-line ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} not found; check the path") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read config file {str(path)!r}: {error}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {error}") from None


# Keys that make twophase write outside the output folder, with the command-line way to
# set them. A config file may come from someone else, so it cannot set them.
WRITE_LOCATIONS = {
    ("data", "cache_dir"): "pass --cache-dir or set TWOPHASE_CACHE_DIR",
    ("data", "download"): "pass --download",
}


def _reject_write_locations(data: Mapping[str, Any], source: str) -> None:
    for (section, key), fix in WRITE_LOCATIONS.items():
        table = data.get(section)
        if isinstance(table, Mapping) and key in table and table[key] not in (None, False):
            raise ConfigError(
                f"{section}.{key} = {table[key]!r} in config file {source!r} is rejected: a config file may not "
                f"choose where twophase writes outside --out; remove it and {fix}"
            )


def without_write_locations(config: C) -> C:
    """Return the config without the keys of WRITE_LOCATIONS, as it is saved in an output folder."""
    return dataclasses.replace(config, data=dataclasses.replace(config.data, cache_dir=None, download=False))


def config_from_dict(data: Mapping[str, Any], source: str = "config", kind: type[C] = RunConfig) -> C:
    """Build and validate a config of type `kind` from nested plain data; name every unknown key."""
    sections = {f.name: f.type for f in dataclasses.fields(kind)}
    unknown = sorted(set(data) - set(sections))
    if unknown:
        raise ConfigError(
            f"unknown section(s) {', '.join(unknown)} in {source}; known sections: {', '.join(sections)}"
        )
    hints = typing.get_type_hints(kind)
    built = {}
    for name in sections:
        section_data = data.get(name, {})
        if not isinstance(section_data, Mapping):
            raise _section_type_error(name, section_data, source)
        built[name] = _build_section(hints[name], name, section_data, source)
    config = kind(**built)
    config.validate()
    return config


def _build_section(cls: type, section: str, data: Mapping[str, Any], source: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(f'{section}.{key}' for key in unknown)} in {source}; "
            f"known keys in [{section}]: {', '.join(names)}"
        )
    values = {name: _coerce(data[name], hints[name], f"{section}.{name}") for name in names if name in data}
    return cls(**values)


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check `value` against a field's type; allow int for float and int for step strings."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)

    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return _coerce(value, inner, key)
    if annotation is bool:
        if not isinstance(value, bool):
            raise _type_error(key, value, "true or false")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(key, value, "an integer")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _type_error(key, value, "a number")
        if not math.isfinite(value):
            raise ConfigError(f"invalid value for {key}: {value!r} is not a finite number")
        return float(value)
    if annotation is str:
        # Steps and step grids may be written as plain integers in TOML.
        if isinstance(value, int) and not isinstance(value, bool) and key in _STEP_KEYS:
            return str(value)
        if not isinstance(value, str):
            expected = "a number of steps such as 300 or a string such as '5ep'" if key in _STEP_KEYS else "a string"
            raise _type_error(key, value, expected)
        return value
    if origin is tuple:
        if isinstance(value, str):
            # The command line's form: "80ep,120ep" or "0,1,2", and "none" for an empty list.
            value = [] if value.strip().lower() in ("", "none") else [part.strip() for part in value.split(",")]
            if args[0] is int:
                value = [_integer_item(item, key) for item in value]
        items = [value] if isinstance(value, (str, int)) and not isinstance(value, bool) else value
        if not isinstance(items, (list, tuple)):
            raise _type_error(key, value, "a list")
        return tuple(_coerce(item, args[0], key) for item in items)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _type_error(key, value, "a table")
        _check_finite(value, key)
        return dict(value)
    raise TypeError(f"config field {key} has an unsupported type {annotation!r}")


def _integer_item(text: str, key: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"invalid value for {key}: {text!r} in the list is not an integer") from None


# Keys whose values are steps or step grids, so that a plain integer such as 300 is accepted.
_STEP_KEYS = {"train.length", "train.checkpoints", "optimizer.milestones", "cone.dts", "cone.taus", "chaos.t0", "chaos.t1"}


def _check_finite(value: Any, key: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"invalid value for {key}: {value!r} is not a finite number")
    if isinstance(value, Mapping):
        for name, item in value.items():
            _check_finite(item, f"{key}.{name}")
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_finite(item, key)


def _section_type_error(section: str, value: Any, source: str) -> ConfigError:
    return ConfigError(
        f"invalid value for {section} in {source}: expected a table, got {value!r} ({type(value).__name__}); "
        f"write its keys under a [{section}] header"
    )


def _type_error(key: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"invalid value for {key}: expected {expected}, got {value!r} ({type(value).__name__})")


def validate_config(config: RunConfig) -> None:
    """Check ranges and choices that do not depend on the data set; raise ConfigError."""
    optimizer, train, data = config.optimizer, config.train, config.data
    require(optimizer.lr > 0, "optimizer.lr", optimizer.lr, "must be positive")
    require(0 <= optimizer.momentum < 1, "optimizer.momentum", optimizer.momentum, "must be in [0, 1)")
    require(optimizer.weight_decay >= 0, "optimizer.weight_decay", optimizer.weight_decay, "cannot be negative")
    require(optimizer.lr_factor > 0, "optimizer.lr_factor", optimizer.lr_factor, "must be positive")
    require(
        not optimizer.nesterov or optimizer.momentum > 0,
        "optimizer.nesterov", optimizer.nesterov, "needs momentum > 0",
    )
    require(train.batch_size > 0, "train.batch_size", train.batch_size, "must be positive")
    require(train.eval_batch_size > 0, "train.eval_batch_size", train.eval_batch_size, "must be positive")
    for key, seed in (("train.init_seed", train.init_seed), ("train.data_seed", train.data_seed)):
        require(0 <= seed < MAX_SEED, key, seed, "must lie in [0, 2**63), the range of torch.manual_seed")
    require(train.device in DEVICES, "train.device", train.device, f"must be one of {', '.join(DEVICES)}")
    require(data.augmentation in AUGMENTATIONS, "data.augmentation", data.augmentation, f"must be one of {', '.join(AUGMENTATIONS)}")
    require(config.model.width is None or config.model.width > 0, "model.width", config.model.width, "must be positive")

    length = parse_setting("train.length", Step.parse, train.length)
    for milestone in optimizer.milestones:
        parse_setting("optimizer.milestones", Step.parse, milestone)
    parse_setting("train.checkpoints", StepGrid.parse, train.checkpoints)
    require(not length.is_end, "train.length", train.length, "must be a number of steps or epochs")
    require(length.iterations != 0 and length.epochs != 0, "train.length", train.length, "must be positive")


def parse_setting(key: str, parse: Callable[[str], T], text: str) -> T:
    """Parse a step or grid setting, naming `key` in the ConfigError if it is invalid."""
    try:
        return parse(text)
    except GridError as error:
        raise ConfigError(f"invalid value for {key}: {error}") from None


def require(condition: bool, key: str, value: Any, rule: str) -> None:
    """Raise ConfigError naming `key`, `value` and the `rule` it breaks unless `condition` holds."""
    if not condition:
        raise ConfigError(f"invalid value for {key}: {value!r} {rule}")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _without_none(value: Any) -> Any:
    """Drop None entries, which TOML cannot express; reading back restores the defaults."""
    if isinstance(value, dict):
        return {key: _without_none(item) for key, item in value.items() if item is not None}
    return value
