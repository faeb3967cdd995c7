"""The deterministic data stream: the batch of step s depends only on (data seed, s).

Each epoch visits a seeded permutation of the training set; step s takes slice
s mod steps_per_epoch of the permutation of epoch s // steps_per_epoch. Augmentation
parameters come from a generator seeded by (data seed, s). A resumed or branched run
therefore gets the same batches as an uninterrupted one without replaying any step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from twophase.core.data import ImageData
from twophase.core.errors import ConfigError

CROP_PADDING = 4

# Tags that keep the seed sequences of batch order, augmentation and dropout apart.
_ORDER_STREAM = 0
_AUGMENT_STREAM = 1
_FORWARD_STREAM = 2


def derive_seed(*entropy: int) -> int:
    """Mix integers into a 63-bit seed; equal inputs give equal seeds on every platform."""
    state = np.random.SeedSequence([int(value) for value in entropy]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def forward_seed(data_seed: int, step: int) -> int:
    """Return the seed of the global generator for the forward pass of `step` (dropout)."""
    return derive_seed(data_seed, _FORWARD_STREAM, step)


def seed_global_generators(seed: int, device: torch.device) -> None:
    """Seed the global CPU generator and, on CUDA, the generator of `device`.

    `torch.manual_seed` also queues a seed for every CUDA device. With a CUDA build on
    a machine where CUDA is not initialized, it formats a stack trace on every call,
    which slows every training step. This function seeds only what the run uses.
    """
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)


@contextmanager
def seeded_global_generators(seed: int, device: torch.device) -> Iterator[None]:
    """Run a block with the global generators seeded, restoring their states afterwards."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        seed_global_generators(seed, device)
        yield


def seeded_generator(*entropy: int) -> torch.Generator:
    """Return a CPU generator seeded from `entropy` through `derive_seed`."""
    return torch.Generator().manual_seed(derive_seed(*entropy))


@dataclass(frozen=True)
class Batch:
    """The training batch of one step, already augmented and normalised."""

    step: int
    indices: torch.Tensor
    images: torch.Tensor
    labels: torch.Tensor
    fingerprint: str


class DataStream:
    """Batches of a training set as a pure function of (data seed, step)."""

    def __init__(
        self,
        data: ImageData,
        batch_size: int,
        seed: int,
        augmentation: str,
        device: torch.device,
        channels_last: bool = False,
    ) -> None:
        count = int(data.train_images.shape[0])
        if batch_size > count:
            raise ConfigError(
                f"invalid value for train.batch_size: {batch_size} exceeds the {count} training images "
                f"of {data.name!r}; use at most {count}"
            )
        if augmentation not in ("flip-crop", "none"):
            raise ConfigError(f"invalid augmentation {augmentation!r}: use flip-crop or none")
        self.data = data.to(device)
        self.batch_size = batch_size
        self.seed = seed
        self.augmentation = augmentation
        self.device = device
        self.channels_last = channels_last
        # Batches never straddle epochs, so the last count % batch_size images of each
        # epoch's permutation are skipped; the next epoch reshuffles.
        self.steps_per_epoch = count // batch_size
        self._mean = torch.tensor(data.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self._std = torch.tensor(data.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self._permutation_epoch = -1
        self._permutation = torch.empty(0, dtype=torch.int64)

    def indices(self, step: int) -> torch.Tensor:
        """Return the training-set indices of the batch at `step` (CPU, int64)."""
        epoch, position = divmod(step, self.steps_per_epoch)
        if epoch != self._permutation_epoch:
            count = int(self.data.train_images.shape[0])
            self._permutation = torch.randperm(count, generator=seeded_generator(self.seed, _ORDER_STREAM, epoch))
            self._permutation_epoch = epoch
        start = position * self.batch_size
        return self._permutation[start : start + self.batch_size].clone()

    def augmentation_parameters(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return the crop offsets (rows, columns) and flip flags of the batch at `step`."""
        generator = seeded_generator(self.seed, _AUGMENT_STREAM, step)
        size = (self.batch_size,)
        rows = torch.randint(0, 2 * CROP_PADDING + 1, size, generator=generator)
        columns = torch.randint(0, 2 * CROP_PADDING + 1, size, generator=generator)
        flips = torch.randint(0, 2, size, generator=generator).bool()
        return rows, columns, flips

    def batch(self, step: int) -> Batch:
        """Gather, augment and normalise the batch of `step`."""
        indices = self.indices(step)
        images = self.data.train_images[indices.to(self.device)]
        labels = self.data.train_labels[indices.to(self.device)]

        digest = hashlib.sha256()
        digest.update(self.augmentation.encode())
        digest.update(indices.numpy().tobytes())
        if self.augmentation == "flip-crop":
            rows, columns, flips = self.augmentation_parameters(step)
            for part in (rows, columns, flips):
                digest.update(part.numpy().tobytes())
            images = flip_crop(images, rows.to(self.device), columns.to(self.device), flips.to(self.device))

        return Batch(
            step=step,
            indices=indices,
            images=self.normalise(images),
            labels=labels,
            fingerprint=digest.hexdigest()[:16],
        )

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """Convert uint8 images to normalised float32, channels-last if configured."""
        result = (images.float().div_(255.0) - self._mean) / self._std
        if self.channels_last:
            result = result.contiguous(memory_format=torch.channels_last)
        return result


def flip_crop(images: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Pad by CROP_PADDING with zeros, crop back to the input size at per-image offsets, flip.

    Works on uint8 (B, C, H, W) with one gather, so the whole batch is augmented at once.
    """
    batch, channels, height, width = images.shape
    padded = torch.nn.functional.pad(images, (CROP_PADDING,) * 4)
    row_index = rows.view(-1, 1) + torch.arange(height, device=images.device)
    column_index = columns.view(-1, 1) + torch.arange(width, device=images.device)
    # Reverse the column order of flipped images before gathering, so no second pass is needed.
    column_index = torch.where(flips.view(-1, 1), column_index.flip(1), column_index)
    batch_index = torch.arange(batch, device=images.device).view(-1, 1, 1)
    cropped = padded.permute(0, 2, 3, 1)[batch_index, row_index.view(batch, height, 1), column_index.view(batch, 1, width)]
    return cropped.permute(0, 3, 1, 2).contiguous()
