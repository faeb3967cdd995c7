"""A folder of image files in `train/<class>/` and `test/<class>/`, decoded once and cached."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from twophase.core.data import ImageData, channel_statistics
from twophase.core.errors import DataError
from twophase.core.specs import DatasetRequest
from twophase.plugins.datasets.cache import read_cache, write_cache
from twophase.plugins.datasets.decode import decode_images
from twophase.plugins.datasets.options import check_option_names

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".bmp", ".jpeg", ".jpg", ".png", ".webp"})
LAYOUT = "train/<class>/<image> and test/<class>/<image>"
SPLITS = ("train", "test")
TENSOR_NAMES = {f"{split}_{kind}" for split in SPLITS for kind in ("images", "labels")}

# Part of the cache key: raise it whenever decoding or the file layout changes, so that
# caches written by older code are rebuilt.
CACHE_FORMAT = "2"


@dataclass(frozen=True)
class ImageFile:
    """An image file of the folder with the label of its class folder."""

    path: Path
    label: int
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class FolderListing:
    """The classes of an image folder and its image files per split, in label order."""

    root: Path
    classes: tuple[str, ...]
    files: dict[str, list[ImageFile]]


def load_imagefolder(request: DatasetRequest) -> ImageData:
    """Load `train/<class>/*` and `test/<class>/*` images under `data_dir` as uint8 RGB.

    Classes are the sorted names of the folders in `train/`, and `test/` must have the same
    ones. Only files directly in a class folder with a .jpg, .jpeg, .png, .bmp or .webp
    suffix (any case) count, and names that start with a dot are skipped. Every image
    must have the same size. The decoded tensors are cached under `cache_dir/imagefolder/`
    and reused until a file is added, removed, or changes size or mtime.
    """
    check_option_names(request.name, request.options, ())
    if request.data_dir is None:
        raise DataError(f"imagefolder needs --data-dir: pass a folder with {LAYOUT}")

    listing = list_folder(request.data_dir.expanduser().resolve())
    key = cache_key(listing)
    cache_path = request.cache_dir / "imagefolder" / f"{path_digest(listing.root)}.safetensors"

    cached = read_cache(cache_path, key, TENSOR_NAMES)
    if cached is None:
        tensors = decode_listing(listing)
        mean, std = channel_statistics(tensors["train_images"])
        # The statistics go into the cache too because computing them for 50,000 CIFAR
        # images takes longer than reading the cache file.
        metadata = {
            "key": key,
            "classes": json.dumps(listing.classes),
            "source": str(listing.root),
            "mean": json.dumps(mean),
            "std": json.dumps(std),
        }
        try:
            write_cache(cache_path, tensors, metadata)
        except OSError as error:
            logger.warning(
                "Failed to write cache file %s (%s), so the next load decodes again", cache_path, error
            )
    else:
        tensors, metadata = cached
        mean, std = tuple(json.loads(metadata["mean"])), tuple(json.loads(metadata["std"]))

    return ImageData(
        name=request.name,
        train_images=tensors["train_images"],
        train_labels=tensors["train_labels"],
        test_images=tensors["test_images"],
        test_labels=tensors["test_labels"],
        classes=listing.classes,
        mean=mean,
        std=std,
    )


def list_folder(root: Path) -> FolderListing:
    """List the image files of both splits, raising DataError on a layout that cannot load."""
    if not root.exists():
        raise DataError(f"image folder {root} not found: check --data-dir, which needs {LAYOUT}")
    if not root.is_dir():
        raise DataError(f"{root} is not a folder: pass a folder with {LAYOUT} as --data-dir")

    class_folders = {split: list_class_folders(root, split) for split in SPLITS}
    train_classes, test_classes = set(class_folders["train"]), set(class_folders["test"])
    if train_classes != test_classes:
        only_train = ", ".join(sorted(train_classes - test_classes)) or "none"
        only_test = ", ".join(sorted(test_classes - train_classes)) or "none"
        raise DataError(
            f"class folders of {root / 'test'} differ from {root / 'train'} "
            f"(only in train/: {only_train}; only in test/: {only_test}): "
            "give both splits the same class folders"
        )

    classes = tuple(sorted(train_classes))
    files = {
        split: [
            image_file
            for label, name in enumerate(classes)
            for image_file in list_images(class_folders[split][name], label)
        ]
        for split in SPLITS
    }
    return FolderListing(root=root, classes=classes, files=files)


def list_class_folders(root: Path, split: str) -> dict[str, Path]:
    """Map each class name to its folder in `root/split`, skipping names that start with a dot."""
    split_folder = root / split
    if not split_folder.is_dir():
        raise DataError(f"image folder {root} has no {split}/ sub-folder: it needs {LAYOUT}")

    folders = {
        entry.name: Path(entry.path)
        for entry in os.scandir(split_folder)
        if entry.is_dir() and not entry.name.startswith(".")
    }
    if not folders:
        raise DataError(
            f"{split_folder} has no class folders: put each class's images in {split}/<class>/"
        )
    return folders


def list_images(class_folder: Path, label: int) -> list[ImageFile]:
    """List the image files directly in a class folder, sorted by name.

    Names that start with a dot are skipped because macOS writes `._name.jpg` metadata
    files next to real images.
    """
    images = []
    for entry in os.scandir(class_folder):
        suffix = os.path.splitext(entry.name)[1].lower()
        if suffix in IMAGE_SUFFIXES and not entry.name.startswith(".") and entry.is_file():
            status = entry.stat()
            images.append(ImageFile(Path(entry.path), label, status.st_size, status.st_mtime_ns))

    if not images:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise DataError(
            f"class folder {class_folder} has no images ({suffixes}): add images or remove the folder"
        )
    return sorted(images, key=lambda image: image.path.name)


def cache_key(listing: FolderListing) -> str:
    """Hash the class list and every file's relative path, size and mtime_ns."""
    digest = hashlib.sha256()
    digest.update(f"imagefolder cache {CACHE_FORMAT}\n".encode())
    digest.update(json.dumps(listing.classes).encode() + b"\n")
    for split in SPLITS:
        for image in listing.files[split]:
            relative = f"{split}/{listing.classes[image.label]}/{image.path.name}"
            digest.update(f"{relative}\t{image.size}\t{image.mtime_ns}\n".encode())
    return digest.hexdigest()


def path_digest(root: Path) -> str:
    """Hash the folder's resolved path into a cache file name, so each folder has its own cache."""
    return hashlib.sha256(str(root).encode()).hexdigest()[:16]


def decode_listing(listing: FolderListing) -> dict[str, torch.Tensor]:
    """Decode both splits into the tensors that the cache file stores."""
    count = sum(len(listing.files[split]) for split in SPLITS)
    logger.info("Decoding %d images under %s", count, listing.root)
    start = time.perf_counter()

    train_files, test_files = listing.files["train"], listing.files["test"]
    train_images = decode_images([image.path for image in train_files])
    # The first train image sets the size that every test image must have too.
    reference = (train_files[0].path, tuple(train_images.shape[1:]))
    test_images = decode_images([image.path for image in test_files], reference)

    seconds = time.perf_counter() - start
    logger.info("Decoded %d images under %s in %.1f s", count, listing.root, seconds)
    return {
        "train_images": train_images,
        "train_labels": torch.tensor([image.label for image in train_files], dtype=torch.int64),
        "test_images": test_images,
        "test_labels": torch.tensor([image.label for image in test_files], dtype=torch.int64),
    }
