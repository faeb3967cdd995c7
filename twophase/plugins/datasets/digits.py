"""scikit-learn's bundled 8x8 handwritten digits, split into train and test once."""

from __future__ import annotations

import numpy as np
import torch

from twophase.core.data import ImageData, channel_statistics
from twophase.core.specs import DatasetRequest
from twophase.plugins.datasets.options import check_option_names, int_option

TOTAL_IMAGES = 1797
OPTION_DEFAULTS = {"test_size": 360, "split_seed": 0}

# load_digits stores pixel intensities as integers 0..16.
MAX_PIXEL_VALUE = 16


def load_digits_data(request: DatasetRequest) -> ImageData:
    """Load the 1,797 digits as uint8 images (N, 1, 8, 8) scaled to 0..255.

    The split is a permutation of the image indices drawn from numpy's legacy
    `RandomState(split_seed)`, whose output numpy keeps frozen at the values of numpy
    1.16, so every machine gets the same split. Options: `test_size` (default 360) images go to
    the test split and the rest to train; `split_seed` (default 0) seeds the permutation.
    """
    check_option_names(request.name, request.options, OPTION_DEFAULTS)
    test_size = int_option(
        request.name, request.options, "test_size", OPTION_DEFAULTS["test_size"], 1, TOTAL_IMAGES - 1
    )
    split_seed = int_option(
        request.name, request.options, "split_seed", OPTION_DEFAULTS["split_seed"], 0, 2**32 - 1
    )

    # Imported here because importing sklearn.datasets takes about 0.8 s, which every CLI
    # call would pay when the plugin is registered.
    from sklearn.datasets import load_digits

    bunch = load_digits()
    scaled = np.rint(bunch.images * (255 / MAX_PIXEL_VALUE)).astype(np.uint8)
    images = torch.from_numpy(scaled).unsqueeze(1)
    labels = torch.from_numpy(bunch.target.astype(np.int64))

    permutation = np.random.RandomState(split_seed).permutation(len(labels))
    test_index = torch.from_numpy(np.sort(permutation[:test_size]))
    train_index = torch.from_numpy(np.sort(permutation[test_size:]))

    train_images = images[train_index].contiguous()
    mean, std = channel_statistics(train_images)
    return ImageData(
        name=request.name,
        train_images=train_images,
        train_labels=labels[train_index].contiguous(),
        test_images=images[test_index].contiguous(),
        test_labels=labels[test_index].contiguous(),
        classes=tuple(str(digit) for digit in range(10)),
        mean=mean,
        std=std,
    )
