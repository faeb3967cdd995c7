"""Built-in data sets, registered through the same `register_datasets` hook as a plugin's."""

from __future__ import annotations

from twophase import hookimpl
from twophase.core.specs import DatasetSpec
from twophase.plugins.datasets.cifar import load_cifar10, load_cifar100
from twophase.plugins.datasets.digits import load_digits_data
from twophase.plugins.datasets.imagefolder import load_imagefolder
from twophase.plugins.datasets.synthetic import load_synthetic


@hookimpl
def register_datasets() -> list[DatasetSpec]:
    """Register digits, synthetic, cifar10, cifar100 and imagefolder."""
    return [
        DatasetSpec(
            name="digits",
            load=load_digits_data,
            summary="scikit-learn's 1,797 handwritten digits, 8x8 grayscale, 10 classes; no download",
            default_augmentation="none",
        ),
        DatasetSpec(
            name="synthetic",
            load=load_synthetic,
            summary="seeded class prototypes plus noise, of any size; for tests and quick runs",
            default_augmentation="none",
        ),
        DatasetSpec(
            name="cifar10",
            load=load_cifar10,
            summary="CIFAR-10, 60,000 32x32 colour images in 10 classes, via torchvision",
            default_augmentation="flip-crop",
        ),
        DatasetSpec(
            name="cifar100",
            load=load_cifar100,
            summary="CIFAR-100, 60,000 32x32 colour images in 100 classes, via torchvision",
            default_augmentation="flip-crop",
        ),
        DatasetSpec(
            name="imagefolder",
            load=load_imagefolder,
            summary="images in train/<class>/ and test/<class>/ folders, decoded once and cached",
            default_augmentation="flip-crop",
        ),
    ]
