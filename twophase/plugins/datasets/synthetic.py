"""Seeded random images that a model can learn: class prototypes plus noise."""

from __future__ import annotations

import numpy as np
import torch

from twophase.core.data import ImageData, channel_statistics
from twophase.core.specs import DatasetRequest
from twophase.plugins.datasets.options import check_option_names, int_option

OPTION_DEFAULTS = {
    "train_size": 512,
    "test_size": 256,
    "image_size": 32,
    "channels": 3,
    "classes": 10,
    "seed": 0,
}

# Standard deviation of the per-pixel Gaussian noise on the 0..255 scale. Two uniform
# prototypes differ by 255 / 3 = 85 per pixel on average, so the classes stay separable.
NOISE_STD = 32.0

# Stream ids that are seeded together with `seed`, so that the test split stays the same
# when only `train_size` changes.
PROTOTYPE_STREAM, TRAIN_STREAM, TEST_STREAM = 0, 1, 2


def load_synthetic(request: DatasetRequest) -> ImageData:
    """Generate a seeded data set of square uint8 images for tests and quick runs.

    Each class has a uniform random prototype image, and each sample is its class's
    prototype plus Gaussian noise, rounded and clipped to 0..255. Labels cycle through
    the classes and are then shuffled, so every class appears when a split has at least
    `classes` images. The same options give bitwise-identical tensors. The numbers come
    from numpy's legacy `RandomState`, whose output numpy keeps frozen at the values of
    numpy 1.16 up to floating-point roundoff, so other machines and numpy versions get
    the same data too. Options and defaults: train_size 512, test_size 256, image_size
    32 (pixels per side), channels 3, classes 10, seed 0.
    """
    options = read_options(request)
    shape = (options["channels"], options["image_size"], options["image_size"])

    prototype_random = np.random.RandomState([options["seed"], PROTOTYPE_STREAM])
    prototypes = prototype_random.uniform(0.0, 255.0, size=(options["classes"], *shape))

    train_images, train_labels = draw_samples(
        prototypes, options["train_size"], np.random.RandomState([options["seed"], TRAIN_STREAM])
    )
    test_images, test_labels = draw_samples(
        prototypes, options["test_size"], np.random.RandomState([options["seed"], TEST_STREAM])
    )

    mean, std = channel_statistics(train_images)
    return ImageData(
        name=request.name,
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        classes=tuple(f"class_{index}" for index in range(options["classes"])),
        mean=mean,
        std=std,
    )


def read_options(request: DatasetRequest) -> dict[str, int]:
    """Return every option with its default filled in, raising UsageError on a bad one."""
    check_option_names(request.name, request.options, OPTION_DEFAULTS)
    minimums = {"train_size": 1, "test_size": 1, "image_size": 1, "channels": 1, "classes": 2, "seed": 0}
    # RandomState takes seeds from 0 to 2**32 - 1.
    maximums = {"seed": 2**32 - 1}

    values = {}
    for name, default in OPTION_DEFAULTS.items():
        values[name] = int_option(
            request.name, request.options, name, default, minimums[name], maximums.get(name)
        )
    return values


def draw_samples(
    prototypes: np.ndarray, count: int, random: np.random.RandomState
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw `count` noisy copies of the prototypes with balanced, shuffled labels."""
    num_classes = prototypes.shape[0]
    labels = random.permutation(np.arange(count) % num_classes)
    noise = random.normal(0.0, NOISE_STD, size=(count, *prototypes.shape[1:]))
    images = np.clip(np.rint(prototypes[labels] + noise), 0, 255).astype(np.uint8)
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))
