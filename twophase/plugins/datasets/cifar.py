"""CIFAR-10 and CIFAR-100 from torchvision's copy of the original Python release."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from twophase.core.data import ImageData, channel_statistics
from twophase.core.errors import DataError
from twophase.core.specs import DatasetRequest
from twophase.plugins.datasets.options import check_option_names

logger = logging.getLogger(__name__)

# The folder that torchvision extracts each archive into, inside `data_dir`.
SUBFOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


def load_cifar10(request: DatasetRequest) -> ImageData:
    """Load CIFAR-10 (50,000 train and 10,000 test 32x32 RGB images, 10 classes)."""
    return load_cifar(request, "cifar10")


def load_cifar100(request: DatasetRequest) -> ImageData:
    """Load CIFAR-100 (50,000 train and 10,000 test 32x32 RGB images, 100 fine classes)."""
    return load_cifar(request, "cifar100")


def load_cifar(request: DatasetRequest, variant: str) -> ImageData:
    """Load a CIFAR variant from `data_dir`, downloading it there only when `download` is set.

    Raises DataError when `data_dir` is unset or does not contain the extracted archive.
    """
    check_option_names(request.name, request.options, ())
    if request.data_dir is None:
        raise DataError(
            f"{variant} needs --data-dir: pass the folder that contains {SUBFOLDERS[variant]}/, "
            "or a folder to download it into with --download"
        )

    data_dir = request.data_dir.expanduser()
    if not request.download and not (data_dir / SUBFOLDERS[variant]).is_dir():
        raise missing_files_error(variant, data_dir)

    # Imported here because importing torchvision takes about 0.8 s, which every CLI call
    # would pay when the plugin is registered.
    from torchvision.datasets import CIFAR10, CIFAR100

    # NOTE: torchvision reads the batch files with pickle, so a data_dir from an untrusted
    # source can run code. The imagefolder loader reads no pickles.
    dataset_class = CIFAR10 if variant == "cifar10" else CIFAR100
    # NOTE: no test covers download=True, because tests must not reach the network.
    if request.download:
        logger.info("Downloading %s into %s unless it is already there", variant, data_dir)
    try:
        train = dataset_class(root=str(data_dir), train=True, download=request.download)
        test = dataset_class(root=str(data_dir), train=False, download=request.download)
    except RuntimeError as error:
        # torchvision raises RuntimeError when a file is missing or fails its MD5 check.
        if request.download:
            raise DataError(
                f"{variant} files in {data_dir / SUBFOLDERS[variant]} fail torchvision's "
                "MD5 check after the download: delete that folder and run again with --download"
            ) from error
        raise missing_files_error(variant, data_dir) from error
    except OSError as error:
        if request.download:
            raise DataError(
                f"downloading {variant} into {data_dir} failed ({error}): check the network "
                f"connection, or place the extracted {SUBFOLDERS[variant]}/ there yourself"
            ) from error
        raise DataError(
            f"reading {variant} from {data_dir / SUBFOLDERS[variant]} failed ({error}): "
            "check that the files are readable"
        ) from error

    train_images = to_channels_first(train.data)
    mean, std = channel_statistics(train_images)
    return ImageData(
        name=request.name,
        train_images=train_images,
        train_labels=torch.tensor(train.targets, dtype=torch.int64),
        test_images=to_channels_first(test.data),
        test_labels=torch.tensor(test.targets, dtype=torch.int64),
        classes=tuple(train.classes),
        mean=mean,
        std=std,
    )


def missing_files_error(variant: str, data_dir: Path) -> DataError:
    """Build the error for a data_dir without the extracted archive or with corrupt files."""
    subfolder = SUBFOLDERS[variant]
    hint = ""
    if data_dir.name == subfolder:
        hint = f" (pass its parent folder {data_dir.parent} instead)"
    return DataError(
        f"{variant} files not found or corrupt in {data_dir / subfolder}{hint}: "
        f"pass --download to fetch {variant} into {data_dir}, "
        "or use --dataset imagefolder for a folder of images"
    )


def to_channels_first(images: np.ndarray) -> torch.Tensor:
    """Convert torchvision's (N, H, W, C) uint8 array to a contiguous (N, C, H, W) tensor."""
    return torch.as_tensor(images).permute(0, 3, 1, 2).contiguous()
