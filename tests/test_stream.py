"""The deterministic data stream: batches as a pure function of (data seed, step)."""

from __future__ import annotations

import pytest
import torch

from twophase.core.data import ImageData, channel_statistics
from twophase.core.errors import ConfigError
from twophase.core.stream import DataStream, flip_crop


def tiny_data(count: int = 50) -> ImageData:
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (count, 3, 6, 6), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 3, (count,), generator=generator)
    mean, std = channel_statistics(images)
    return ImageData("tiny", images, labels, images[:10], labels[:10], ("a", "b", "c"), mean, std)


def stream(seed: int = 0, augmentation: str = "flip-crop", batch_size: int = 8) -> DataStream:
    return DataStream(tiny_data(), batch_size, seed, augmentation, torch.device("cpu"))


def test_same_seed_same_fingerprints() -> None:
    a, b = stream(seed=3), stream(seed=3)
    assert [a.batch(s).fingerprint for s in range(20)] == [b.batch(s).fingerprint for s in range(20)]


def test_other_seed_other_fingerprints() -> None:
    a, b = stream(seed=3), stream(seed=4)
    assert all(a.batch(s).fingerprint != b.batch(s).fingerprint for s in range(20))


def test_batch_does_not_depend_on_history() -> None:
    fresh = stream().batch(17)
    walked = stream()
    for step in range(17):
        walked.batch(step)
    again = walked.batch(17)
    assert fresh.fingerprint == again.fingerprint
    assert torch.equal(fresh.images, again.images)


def test_epoch_visits_each_image_once() -> None:
    data_stream = stream(batch_size=10)
    seen = torch.cat([data_stream.indices(step) for step in range(data_stream.steps_per_epoch)])
    assert sorted(seen.tolist()) == list(range(50))


def test_epochs_reshuffle() -> None:
    data_stream = stream(batch_size=10)
    assert not torch.equal(data_stream.indices(0), data_stream.indices(data_stream.steps_per_epoch))


def test_fingerprint_covers_augmentation() -> None:
    assert stream(augmentation="none").batch(0).fingerprint != stream(augmentation="flip-crop").batch(0).fingerprint


def test_batch_larger_than_data_rejected() -> None:
    with pytest.raises(ConfigError, match="train.batch_size: 64 exceeds the 50 training images"):
        stream(batch_size=64)


def test_flip_crop_center_is_identity() -> None:
    images = torch.randint(0, 256, (2, 3, 6, 6), dtype=torch.uint8)
    four = torch.full((2,), 4)
    result = flip_crop(images, four, four, torch.zeros(2, dtype=torch.bool))
    assert torch.equal(result, images)


def test_flip_crop_flips_columns() -> None:
    images = torch.randint(0, 256, (2, 3, 6, 6), dtype=torch.uint8)
    four = torch.full((2,), 4)
    result = flip_crop(images, four, four, torch.tensor([True, False]))
    assert torch.equal(result[0], images[0].flip(-1))
    assert torch.equal(result[1], images[1])


def test_flip_crop_shift_pads_with_zeros() -> None:
    images = torch.full((1, 1, 6, 6), 7, dtype=torch.uint8)
    result = flip_crop(images, torch.tensor([0]), torch.tensor([8]), torch.tensor([False]))
    # Row offset 0 shows 4 padded rows on top; column offset 8 shows 4 padded columns on the right.
    assert torch.equal(result[0, 0, :4], torch.zeros(4, 6, dtype=torch.uint8))
    assert torch.equal(result[0, 0, 4:, 2:], torch.zeros(2, 4, dtype=torch.uint8))
    assert torch.equal(result[0, 0, 4:, :2], torch.full((2, 2), 7, dtype=torch.uint8))


def test_normalised_training_set_has_unit_statistics() -> None:
    data_stream = stream(augmentation="none", batch_size=50)
    images = data_stream.normalise(data_stream.data.train_images)
    assert images.mean(dim=(0, 2, 3)).abs().max() < 1e-5
    assert (images.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-2
