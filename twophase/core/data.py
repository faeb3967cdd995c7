"""In-memory image data sets as uint8 tensors."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from twophase.core.errors import DataError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageData:
    """A whole data set in memory: uint8 images (N, C, H, W), int64 labels, class names.

    `mean` and `std` are per-channel statistics on the [0, 1] scale that normalise the
    images; `channel_statistics` computes them from the training images.
    """

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        for split, images, labels in (
            ("train", self.train_images, self.train_labels),
            ("test", self.test_images, self.test_labels),
        ):
            if images.dtype != torch.uint8 or images.ndim != 4:
                raise DataError(
                    f"data set {self.name!r}: {split} images must be a uint8 tensor (N, C, H, W), "
                    f"got {images.dtype} with shape {tuple(images.shape)}"
                )
            if labels.dtype != torch.int64 or labels.shape != (images.shape[0],):
                raise DataError(
                    f"data set {self.name!r}: {split} labels must be int64 of shape "
                    f"({images.shape[0]},), got {labels.dtype} {tuple(labels.shape)}"
                )
            if images.shape[0] == 0:
                raise DataError(f"data set {self.name!r} has no {split} images")
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise DataError(
                f"data set {self.name!r}: train images are {tuple(self.train_images.shape[1:])} "
                f"but test images are {tuple(self.test_images.shape[1:])}"
            )
        channels = self.train_images.shape[1]
        if len(self.mean) != channels or len(self.std) != channels:
            raise DataError(
                f"data set {self.name!r}: mean and std need {channels} values, "
                f"got {len(self.mean)} and {len(self.std)}"
            )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train_images.shape[2]), int(self.train_images.shape[3])

    def to(self, device: torch.device) -> ImageData:
        """Return a copy whose tensors live on `device`."""
        return ImageData(
            name=self.name,
            train_images=self.train_images.to(device),
            train_labels=self.train_labels.to(device),
            test_images=self.test_images.to(device),
            test_labels=self.test_labels.to(device),
            classes=self.classes,
            mean=self.mean,
            std=self.std,
        )


def channel_statistics(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Compute per-channel mean and standard deviation of uint8 images on the [0, 1] scale.

    Accumulates in float64 so that 50,000 CIFAR images do not lose digits to rounding.
    """
    channels = images.shape[1]
    flat = images.transpose(0, 1).reshape(channels, -1)
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    count = flat.shape[1]
    for start in range(0, count, 1 << 22):
        chunk = flat[:, start : start + (1 << 22)].to(torch.float64) / 255.0
        total += chunk.sum(dim=1)
        total_sq += (chunk * chunk).sum(dim=1)
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(1e-12).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())
