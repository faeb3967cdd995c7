"""Built-in data sets plugin: registration, digits, synthetic, CIFAR and image folders."""

from __future__ import annotations

import collections
import logging
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from twophase.core.data import ImageData, channel_statistics
from twophase.core.errors import DataError, UsageError
from twophase.core.specs import DatasetRequest, DatasetSpec
from twophase.plugins.datasets import imagefolder, register_datasets

# Colours of the generated class folders, in the order the folders are created. The
# names are deliberately unsorted, so label order must come from sorting.
CLASS_COLOURS = {"zebra": (250, 20, 20), "ant": (20, 250, 20), "moose": (20, 20, 250)}
SORTED_CLASSES = ("ant", "moose", "zebra")


def specs() -> dict[str, DatasetSpec]:
    return {spec.name: spec for spec in register_datasets()}


def load(
    name: str, cache_dir: Path, data_dir: Path | None = None, download: bool = False, **options: Any
) -> ImageData:
    request = DatasetRequest(
        name=name, data_dir=data_dir, download=download, cache_dir=cache_dir, options=options
    )
    return specs()[name].load(request)


def save_image(path: Path, colour: tuple[int, ...], size: tuple[int, int] = (8, 8), mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)


def write_image_folder(root: Path, train_per_class: int = 4, test_per_class: int = 2) -> Path:
    """Write 8x8 PNG and JPEG images of one solid colour per class into train/ and test/."""
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for name, colour in CLASS_COLOURS.items():
            for index in range(count):
                suffix = ".png" if index % 2 == 0 else ".jpg"
                save_image(root / split / name / f"{index:02d}{suffix}", colour)
    return root


def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Wrap the image folder's decoder and return a list that grows by one per call."""
    calls: list[int] = []
    original = imagefolder.decode_images

    def counting_decode(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(imagefolder, "decode_images", counting_decode)
    return calls


def cache_files(cache_dir: Path) -> list[Path]:
    return sorted((cache_dir / "imagefolder").glob("*.safetensors"))


# Registration


def test_register_datasets_names() -> None:
    assert set(specs()) == {"digits", "synthetic", "cifar10", "cifar100", "imagefolder"}


@pytest.mark.parametrize(
    ("name", "augmentation"),
    [
        ("digits", "none"),
        ("synthetic", "none"),
        ("cifar10", "flip-crop"),
        ("cifar100", "flip-crop"),
        ("imagefolder", "flip-crop"),
    ],
)
def test_register_datasets_default_augmentation(name: str, augmentation: str) -> None:
    assert specs()[name].default_augmentation == augmentation


def test_register_datasets_summaries_one_line() -> None:
    for spec in specs().values():
        assert spec.summary, spec.name
        assert "\n" not in spec.summary, spec.name


# Digits


def test_digits_shapes_and_dtypes(tmp_path: Path) -> None:
    data = load("digits", tmp_path)

    assert data.train_images.shape == (1437, 1, 8, 8)
    assert data.test_images.shape == (360, 1, 8, 8)
    assert data.train_images.dtype == torch.uint8
    assert data.train_labels.dtype == torch.int64
    assert data.classes == tuple(str(digit) for digit in range(10))


def test_digits_pixels_scaled_to_255(tmp_path: Path) -> None:
    data = load("digits", tmp_path)
    all_images = torch.cat([data.train_images, data.test_images])

    assert int(all_images.max()) == 255
    assert set(all_images.unique().tolist()) <= {round(value * 255 / 16) for value in range(17)}


def test_digits_split_is_fixed(tmp_path: Path) -> None:
    first = load("digits", tmp_path)
    second = load("digits", tmp_path)

    assert torch.equal(first.test_images, second.test_images)
    assert torch.equal(first.train_labels, second.train_labels)
    # The first labels of each split under split_seed 0. A change here means that the
    # split differs from the one that earlier runs used.
    assert first.test_labels[:12].tolist() == [4, 5, 6, 9, 4, 7, 8, 9, 9, 6, 9, 9]
    assert first.train_labels[:12].tolist() == [0, 1, 2, 3, 7, 8, 0, 1, 2, 3, 5, 6]


def test_digits_split_is_partition(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    data = load("digits", tmp_path)
    expected = np.rint(load_digits().images * 255 / 16).astype(np.uint8)
    expected_counts = collections.Counter(image.tobytes() for image in expected)
    split_counts = collections.Counter(
        image.numpy().tobytes() for image in torch.cat([data.train_images, data.test_images])
    )

    # Equal multisets prove that every image lands in exactly one split.
    assert split_counts == expected_counts


def test_digits_test_size_option(tmp_path: Path) -> None:
    data = load("digits", tmp_path, test_size=100)

    assert len(data.test_labels) == 100
    assert len(data.train_labels) == 1697


def test_digits_split_seed_changes_split(tmp_path: Path) -> None:
    default = load("digits", tmp_path)
    other = load("digits", tmp_path, split_seed=1)

    assert not torch.equal(default.test_images, other.test_images)


def test_digits_statistics_from_train_images(tmp_path: Path) -> None:
    data = load("digits", tmp_path)

    assert (data.mean, data.std) == channel_statistics(data.train_images)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"train_size": 10}, "unknown option 'train_size'"),
        ({"test_size": 0}, "from 1 to 1796, got 0"),
        ({"test_size": 1797}, "from 1 to 1796, got 1797"),
        ({"test_size": "360"}, "must be an integer, got '360'"),
        ({"test_size": True}, "must be an integer, got True"),
        ({"split_seed": -1}, "from 0 to 4294967295, got -1"),
    ],
)
def test_digits_invalid_options(tmp_path: Path, options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(UsageError, match="data set 'digits'") as caught:
        load("digits", tmp_path, **options)

    assert fragment in str(caught.value)


def test_digits_unknown_option_lists_known(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as caught:
        load("digits", tmp_path, colour=1)

    assert "known options are split_seed, test_size" in str(caught.value)


# Synthetic


def test_synthetic_default_shapes(tmp_path: Path) -> None:
    data = load("synthetic", tmp_path)

    assert data.train_images.shape == (512, 3, 32, 32)
    assert data.test_images.shape == (256, 3, 32, 32)
    assert data.train_images.dtype == torch.uint8
    assert data.test_labels.dtype == torch.int64
    assert data.num_classes == 10


def test_synthetic_is_deterministic(tmp_path: Path) -> None:
    first = load("synthetic", tmp_path, train_size=64, test_size=32)
    second = load("synthetic", tmp_path, train_size=64, test_size=32)

    assert torch.equal(first.train_images, second.train_images)
    assert torch.equal(first.train_labels, second.train_labels)
    assert torch.equal(first.test_images, second.test_images)
    assert torch.equal(first.test_labels, second.test_labels)


def test_synthetic_default_values_pinned(tmp_path: Path) -> None:
    data = load("synthetic", tmp_path)

    # Sums under the defaults. A change means that seed 0 no longer gives the same data.
    assert int(data.train_images.sum()) == 200930864
    assert int(data.test_images.sum()) == 100471825
    assert data.train_labels[:8].tolist() == [0, 4, 5, 4, 4, 3, 5, 9]


def test_synthetic_seed_changes_data(tmp_path: Path) -> None:
    default = load("synthetic", tmp_path, train_size=64, test_size=32)
    other = load("synthetic", tmp_path, train_size=64, test_size=32, seed=1)

    assert not torch.equal(default.train_images, other.train_images)
    assert not torch.equal(default.test_images, other.test_images)


def test_synthetic_test_split_ignores_train_size(tmp_path: Path) -> None:
    small = load("synthetic", tmp_path, train_size=16, test_size=32)
    large = load("synthetic", tmp_path, train_size=64, test_size=32)

    assert torch.equal(small.test_images, large.test_images)


def test_synthetic_options_set_shape(tmp_path: Path) -> None:
    data = load(
        "synthetic", tmp_path, train_size=20, test_size=10, image_size=5, channels=1, classes=4
    )

    assert data.train_images.shape == (20, 1, 5, 5)
    assert data.test_images.shape == (10, 1, 5, 5)
    assert data.classes == ("class_0", "class_1", "class_2", "class_3")
    assert sorted(data.train_labels.unique().tolist()) == [0, 1, 2, 3]
    assert len(data.mean) == 1


def test_synthetic_is_learnable(tmp_path: Path) -> None:
    data = load("synthetic", tmp_path, train_size=200, test_size=100, image_size=8)
    train = data.train_images.flatten(1).double()
    class_means = torch.stack([train[data.train_labels == label].mean(0) for label in range(10)])

    distances = torch.cdist(data.test_images.flatten(1).double(), class_means)
    accuracy = (distances.argmin(1) == data.test_labels).double().mean().item()

    assert accuracy > 0.95


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"train_size": 0}, "'train_size' of data set 'synthetic' must be at least 1, got 0"),
        ({"channels": 2.5}, "'channels' of data set 'synthetic' must be an integer, got 2.5 (float)"),
        ({"image_size": 0}, "'image_size' of data set 'synthetic' must be at least 1, got 0"),
        ({"classes": 1}, "'classes' of data set 'synthetic' must be at least 2, got 1"),
        ({"seed": -3}, "'seed' of data set 'synthetic' must be from 0 to 4294967295, got -3"),
        ({"colour": "red"}, "unknown option 'colour' for data set 'synthetic'"),
    ],
)
def test_synthetic_invalid_options(tmp_path: Path, options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(UsageError) as caught:
        load("synthetic", tmp_path, **options)

    assert fragment in str(caught.value)


# CIFAR


def forbid_download(monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.cifar

    def fail(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the loader attempted a download")

    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", fail)


def test_cifar10_without_data_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cifar10 needs --data-dir"):
        load("cifar10", tmp_path)


def test_cifar10_missing_folder_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_download(monkeypatch)
    data_dir = tmp_path / "data"

    with pytest.raises(DataError) as caught:
        load("cifar10", tmp_path, data_dir=data_dir)

    message = str(caught.value)
    assert str(data_dir / "cifar-10-batches-py") in message
    assert "pass --download to fetch cifar10 into" in message
    assert "--dataset imagefolder" in message
    assert "\n" not in message
    assert not data_dir.exists()


def test_cifar100_missing_folder_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_download(monkeypatch)

    with pytest.raises(DataError, match="cifar-100-python"):
        load("cifar100", tmp_path, data_dir=tmp_path)


def test_cifar10_empty_folder_hides_torchvision_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_download(monkeypatch)
    (tmp_path / "cifar-10-batches-py").mkdir()

    with pytest.raises(DataError) as caught:
        load("cifar10", tmp_path, data_dir=tmp_path)

    assert "not found or corrupt" in str(caught.value)
    assert "--download" in str(caught.value)
    assert isinstance(caught.value.__cause__, RuntimeError)


def test_cifar10_subfolder_as_data_dir_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_download(monkeypatch)
    subfolder = tmp_path / "cifar-10-batches-py"
    subfolder.mkdir()

    with pytest.raises(DataError, match="pass its parent folder"):
        load("cifar10", tmp_path, data_dir=subfolder)


def test_cifar_rejects_options(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown option 'train_size' for data set 'cifar10'"):
        load("cifar10", tmp_path, data_dir=tmp_path, train_size=10)


def write_fake_cifar(folder: Path, files: dict[str, dict[str, Any]]) -> None:
    """Write pickled batches in the layout of the CIFAR Python release."""
    folder.mkdir(parents=True)
    for name, content in files.items():
        with open(folder / name, "wb") as handle:
            pickle.dump(content, handle)


def fake_batch(labels: list[int], label_key: str) -> dict[str, Any]:
    # Pixel value = label, so the test can check that images and labels stay paired.
    data = np.repeat(np.array(labels, dtype=np.uint8)[:, None], 3072, axis=1)
    data[:, 1024:2048] = 100  # the green plane, to check channel order
    return {"data": data, label_key: labels}


def test_cifar10_loads_python_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.cifar

    forbid_download(monkeypatch)
    # The fake files cannot match the real MD5 sums.
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    files = {f"data_batch_{index}": fake_batch([index, 9], "labels") for index in range(1, 6)}
    files["test_batch"] = fake_batch([3, 4, 5], "labels")
    files["batches.meta"] = {"label_names": [f"name{index}" for index in range(10)]}
    write_fake_cifar(tmp_path / "cifar-10-batches-py", files)

    data = load("cifar10", tmp_path, data_dir=tmp_path)

    assert data.train_images.shape == (10, 3, 32, 32)
    assert data.test_labels.tolist() == [3, 4, 5]
    assert data.train_labels.tolist() == [1, 9, 2, 9, 3, 9, 4, 9, 5, 9]
    assert int(data.train_images[2, 0, 5, 7]) == 2
    assert int(data.train_images[2, 1, 5, 7]) == 100
    assert data.classes[3] == "name3"


def test_cifar100_loads_fine_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.cifar

    forbid_download(monkeypatch)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    files = {
        "train": fake_batch([7, 99], "fine_labels"),
        "test": fake_batch([42], "fine_labels"),
        "meta": {"fine_label_names": [f"fine{index}" for index in range(100)]},
    }
    write_fake_cifar(tmp_path / "cifar-100-python", files)

    data = load("cifar100", tmp_path, data_dir=tmp_path)

    assert data.num_classes == 100
    assert data.train_labels.tolist() == [7, 99]
    assert data.test_images.shape == (1, 3, 32, 32)


# Image folder: loading


def test_imagefolder_loads_small_folder(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "images")

    data = load("imagefolder", tmp_path / "cache", data_dir=root)

    assert data.train_images.shape == (12, 3, 8, 8)
    assert data.test_images.shape == (6, 3, 8, 8)
    assert data.train_images.dtype == torch.uint8
    assert data.train_labels.dtype == torch.int64
    assert data.classes == SORTED_CLASSES


def test_imagefolder_labels_follow_sorted_classes(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "images")

    data = load("imagefolder", tmp_path / "cache", data_dir=root)

    for images, labels in ((data.train_images, data.train_labels), (data.test_images, data.test_labels)):
        for image, label in zip(images, labels):
            expected = torch.tensor(CLASS_COLOURS[SORTED_CLASSES[label]], dtype=torch.int16)
            # JPEG is lossy, so allow a few levels of difference.
            difference = (image[:, 4, 4].to(torch.int16) - expected).abs().max()
            assert int(difference) <= 6, SORTED_CLASSES[label]


def test_imagefolder_statistics_from_train_images(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "images")

    data = load("imagefolder", tmp_path / "cache", data_dir=root)

    assert (data.mean, data.std) == channel_statistics(data.train_images)


def test_imagefolder_reads_every_suffix(tmp_path: Path) -> None:
    root = tmp_path / "images"
    names = ["a.jpg", "b.JPEG", "c.png", "d.bmp", "e.webp", "f.PNG"]
    for name in names:
        save_image(root / "train" / "only" / name, (10, 120, 230))
    save_image(root / "test" / "only" / "g.png", (10, 120, 230))

    data = load("imagefolder", tmp_path / "cache", data_dir=root)

    assert len(data.train_labels) == len(names)


def test_imagefolder_skips_other_files(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "images")
    (root / "train" / "ant" / "notes.txt").write_text("not an image")
    # macOS writes such metadata files next to images when it copies them.
    (root / "train" / "ant" / "._00.png").write_bytes(b"\x00\x05\x16\x07")
    (root / "train" / ".ipynb_checkpoints").mkdir()

    data = load("imagefolder", tmp_path / "cache", data_dir=root)

    assert len(data.train_labels) == 12
    assert data.classes == SORTED_CLASSES


def test_imagefolder_converts_modes_to_rgb(tmp_path: Path) -> None:
    root = tmp_path / "images"
    save_image(root / "train" / "x" / "grey.png", 128, mode="L")
    save_image(root / "train" / "x" / "alpha.png", (1, 2, 3, 4), mode="RGBA")
    save_image(root / "test" / "x" / "palette.png", 5, mode="P")

    data = load("imagefolder", tmp_path / "cache", data_dir=root)

    assert data.train_images.shape == (2, 3, 8, 8)
    assert data.train_images[:, :, 0, 0].tolist() == [[1, 2, 3], [128, 128, 128]]


def test_imagefolder_sixteen_bit_png(tmp_path: Path) -> None:
    root = tmp_path / "images"
    save_image(root / "train" / "x" / "deep.png", 65535, mode="I;16")
    save_image(root / "test" / "x" / "deep.png", 0, mode="I;16")

    data = load("imagefolder", tmp_path / "cache", data_dir=root)

    assert data.train_images.dtype == torch.uint8
    assert int(data.train_images.min()) == 255


def test_imagefolder_sixteen_bit_png_scaled(tmp_path: Path) -> None:
    root = tmp_path / "images"
    save_image(root / "train" / "x" / "deep.png", 40000, mode="I;16")
    save_image(root / "test" / "x" / "deep.png", 257, mode="I;16")

    data = load("imagefolder", tmp_path / "cache", data_dir=root)

    # 40000 / 257 = 155.6 rounds to 156, where Pillow's own RGB conversion would clip it to 255.
    assert data.train_images.unique().tolist() == [156]
    assert data.test_images.unique().tolist() == [1]


# Image folder: cache


def test_imagefolder_creates_cache_file(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "images")

    load("imagefolder", tmp_path / "cache", data_dir=root)

    assert len(cache_files(tmp_path / "cache")) == 1
    assert list((tmp_path / "cache" / "imagefolder").glob("*.tmp")) == []


def test_imagefolder_reuses_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    root = write_image_folder(tmp_path / "images")
    first = load("imagefolder", tmp_path / "cache", data_dir=root)
    decodes = count_decodes(monkeypatch)

    with caplog.at_level(logging.INFO, logger="twophase.plugins.datasets"):
        second = load("imagefolder", tmp_path / "cache", data_dir=root)

    assert decodes == []
    assert "Reusing cache file" in caplog.text
    assert torch.equal(first.train_images, second.train_images)
    assert torch.equal(first.test_labels, second.test_labels)
    assert (first.mean, first.std) == (second.mean, second.std)


def test_imagefolder_rebuilds_after_file_added(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_image_folder(tmp_path / "images")
    load("imagefolder", tmp_path / "cache", data_dir=root)
    decodes = count_decodes(monkeypatch)
    save_image(root / "train" / "ant" / "extra.png", CLASS_COLOURS["ant"])

    data = load("imagefolder", tmp_path / "cache", data_dir=root)

    assert decodes != []
    assert len(data.train_labels) == 13
    assert len(cache_files(tmp_path / "cache")) == 1


def test_imagefolder_rebuilds_after_file_removed(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "images")
    load("imagefolder", tmp_path / "cache", data_dir=root)
    (root / "test" / "moose" / "00.png").unlink()

    data = load("imagefolder", tmp_path / "cache", data_dir=root)

    assert len(data.test_labels) == 5


def test_imagefolder_rebuilds_after_file_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_image_folder(tmp_path / "images")
    load("imagefolder", tmp_path / "cache", data_dir=root)
    decodes = count_decodes(monkeypatch)
    changed = root / "train" / "ant" / "00.png"
    old_mtime = changed.stat().st_mtime_ns
    save_image(changed, (7, 7, 7))
    # Coarse file system clocks could give the rewrite the old mtime.
    os.utime(changed, ns=(old_mtime + 10**9, old_mtime + 10**9))

    data = load("imagefolder", tmp_path / "cache", data_dir=root)

    assert decodes != []
    assert data.train_images[0, :, 0, 0].tolist() == [7, 7, 7]


def test_imagefolder_rebuilds_unreadable_cache(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = write_image_folder(tmp_path / "images")
    load("imagefolder", tmp_path / "cache", data_dir=root)
    cache_file = cache_files(tmp_path / "cache")[0]
    cache_file.write_bytes(b"not a safetensors file")

    with caplog.at_level(logging.INFO, logger="twophase.plugins.datasets"):
        data = load("imagefolder", tmp_path / "cache", data_dir=root)

    assert "Failed to read cache file" in caplog.text
    assert len(data.train_labels) == 12
    assert cache_file.stat().st_size > 100


def test_imagefolder_unwritable_cache_still_loads(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = write_image_folder(tmp_path / "images")
    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache folder should be")

    with caplog.at_level(logging.WARNING, logger="twophase.plugins.datasets"):
        data = load("imagefolder", blocked, data_dir=root)

    assert len(data.train_labels) == 12
    assert "Failed to write cache file" in caplog.text


def test_imagefolder_separate_cache_per_folder(tmp_path: Path) -> None:
    first = write_image_folder(tmp_path / "first")
    second = write_image_folder(tmp_path / "second", train_per_class=2)

    load("imagefolder", tmp_path / "cache", data_dir=first)
    data = load("imagefolder", tmp_path / "cache", data_dir=second)

    assert len(cache_files(tmp_path / "cache")) == 2
    assert len(data.train_labels) == 6


# Image folder: errors


def load_folder_error(tmp_path: Path, data_dir: Path | None) -> str:
    with pytest.raises(DataError) as caught:
        load("imagefolder", tmp_path / "cache", data_dir=data_dir)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_imagefolder_without_data_dir(tmp_path: Path) -> None:
    message = load_folder_error(tmp_path, None)

    assert "imagefolder needs --data-dir" in message
    assert "train/<class>/<image>" in message


def test_imagefolder_missing_folder(tmp_path: Path) -> None:
    message = load_folder_error(tmp_path, tmp_path / "absent")

    assert f"image folder {tmp_path / 'absent'} not found" in message
    assert "train/<class>/<image> and test/<class>/<image>" in message


def test_imagefolder_file_as_data_dir(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "images.zip"
    not_a_folder.write_bytes(b"PK")

    assert "is not a folder" in load_folder_error(tmp_path, not_a_folder)


@pytest.mark.parametrize("split", ["train", "test"])
def test_imagefolder_missing_split(tmp_path: Path, split: str) -> None:
    root = tmp_path / "images"
    save_image(root / ("test" if split == "train" else "train") / "x" / "a.png", (0, 0, 0))

    assert f"has no {split}/ sub-folder" in load_folder_error(tmp_path, root)


def test_imagefolder_no_class_folders(tmp_path: Path) -> None:
    root = tmp_path / "images"
    save_image(root / "train" / "loose.png", (0, 0, 0))
    (root / "test").mkdir()

    message = load_folder_error(tmp_path, root)

    assert f"{root / 'train'} has no class folders" in message


def test_imagefolder_empty_class_folder(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "images")
    empty = root / "test" / "ant"
    for path in empty.iterdir():
        path.unlink()
    (empty / "notes.txt").write_text("no images here")

    message = load_folder_error(tmp_path, root)

    assert f"class folder {empty} has no images" in message


def test_imagefolder_class_sets_differ(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "images")
    save_image(root / "test" / "yak" / "0.png", (0, 0, 0))
    for path in (root / "test" / "zebra").iterdir():
        path.unlink()
    (root / "test" / "zebra").rmdir()

    message = load_folder_error(tmp_path, root)

    assert "only in train/: zebra" in message
    assert "only in test/: yak" in message


def test_imagefolder_corrupt_image(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "images")
    corrupt = root / "train" / "moose" / "01.jpg"
    corrupt.write_bytes(corrupt.read_bytes()[:40])

    message = load_folder_error(tmp_path, root)

    assert f"cannot decode image {corrupt}" in message


def test_imagefolder_not_an_image(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "images")
    fake = root / "test" / "ant" / "fake.png"
    fake.write_text("plain text with an image suffix")

    message = load_folder_error(tmp_path, root)

    assert f"cannot decode image {fake}: not a known image format" in message


def test_imagefolder_empty_image_file(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "images")
    empty = root / "train" / "zebra" / "empty.png"
    empty.write_bytes(b"")

    assert f"image {empty} is an empty file" in load_folder_error(tmp_path, root)


def test_imagefolder_different_sizes(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "images")
    odd = root / "train" / "moose" / "odd.png"
    save_image(odd, (0, 0, 0), size=(12, 6))

    message = load_folder_error(tmp_path, root)

    assert f"image {odd} is 6x12 (height x width)" in message
    assert f"{root / 'train' / 'ant' / '00.png'} is 8x8" in message


def test_imagefolder_test_size_differs_from_train(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "images")
    odd = root / "test" / "zebra" / "00.png"
    save_image(odd, (0, 0, 0), size=(16, 16))

    assert f"image {odd} is 16x16" in load_folder_error(tmp_path, root)


def test_imagefolder_rejects_options(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "images")

    with pytest.raises(UsageError, match="unknown option 'size' for data set 'imagefolder': known options are none"):
        load("imagefolder", tmp_path / "cache", data_dir=root, size=32)
