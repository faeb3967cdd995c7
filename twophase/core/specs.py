"""Descriptions that plugins return from the registration hooks.

A model or data set plugin returns specs whose callables build the object on request.
Perturbation and metric specs only describe names; the work happens in the `perturb`
and `measure` hooks of the plugin that registered the name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from twophase.core.data import ImageData


@dataclass(frozen=True)
class ModelRequest:
    """Everything a model builder gets: the name asked for and the data set's shape."""

    name: str
    num_classes: int
    in_channels: int
    image_size: tuple[int, int]
    width: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def variant(self) -> str:
        """The part after `prefix:` for a namespaced name such as `timm:resnet18`, else ''."""
        _, _, variant = self.name.partition(":")
        return variant


@dataclass(frozen=True)
class ModelSpec:
    """A model that a plugin can build.

    With `namespace=True` the spec owns every name of the form `<name>:<variant>`, as
    `timm` owns `timm:resnet18`. `list_variants` then returns the known variants, so
    that an unknown one gets close matches.
    """

    name: str
    build: Callable[[ModelRequest], nn.Module]
    summary: str
    namespace: bool = False
    list_variants: Callable[[], list[str]] | None = None


@dataclass(frozen=True)
class DatasetRequest:
    """Everything a data set loader gets from the run's data config."""

    name: str
    data_dir: Path | None
    download: bool
    cache_dir: Path
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetSpec:
    """A data set that a plugin can load into memory.

    `default_augmentation` is used when the config's augmentation is `auto`. `flip-crop`
    suits natural images, and `none` suits digits, whose meaning changes under a flip.
    """

    name: str
    load: Callable[[DatasetRequest], ImageData]
    summary: str
    default_augmentation: str = "none"


@dataclass(frozen=True)
class PerturbationSpec:
    """A perturbation kind whose `perturb` hook the registering plugin implements."""

    name: str
    summary: str


@dataclass(frozen=True)
class MetricSpec:
    """A metric that the registering plugin's `measure` hook returns.

    `experiments` names the experiment kinds (`chaos`, `cone`) where the metric applies.
    """

    name: str
    long_name: str
    units: str
    experiments: tuple[str, ...]
    summary: str = ""
