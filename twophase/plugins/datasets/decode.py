"""Decoding of image files into one uint8 RGB tensor."""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from twophase.core.errors import DataError

# torchvision 0.29 warns on every decode call that its decoders are deprecated.
TORCHVISION_DEPRECATION = "The image decoding and encoding capabilities of TorchVision"

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Pillow's modes of 16-bit greyscale PNGs, which its RGB conversion clips at 255.
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I"})


def decode_images(
    paths: Sequence[Path], reference: tuple[Path, tuple[int, ...]] | None = None
) -> torch.Tensor:
    """Decode image files into a uint8 tensor (N, 3, H, W).

    Every image must have the shape of `reference`, a path and its (3, H, W) shape, or
    else of the first file in `paths`. Raises DataError naming the first file that cannot
    be read or decoded, or whose size differs.
    """
    # Imported here because importing torchvision takes about 0.8 s, which every CLI call
    # would pay when the plugin is registered.
    from torchvision.io import ImageReadMode, decode_image

    images: torch.Tensor | None = None
    with warnings.catch_warnings():
        # NOTE: torchvision 0.29 deprecates decode_image in favour of TorchCodec. When
        # torchvision removes it, decode with TorchCodec or with Pillow, which is slower.
        warnings.filterwarnings(
            "ignore", message=TORCHVISION_DEPRECATION, category=DeprecationWarning
        )

        for index, path in enumerate(paths):
            data = read_image_bytes(path)
            if data.startswith(PNG_SIGNATURE):
                # torchvision 0.29.1 ends the process with SIGSEGV, instead of raising, when
                # libpng finds corrupt data in the rows of a PNG, so Pillow decodes PNGs.
                image = decode_with_pillow(path, data)
            else:
                encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
                try:
                    image = decode_image(encoded, mode=ImageReadMode.RGB)
                except RuntimeError:
                    # torchvision decodes JPEG, PNG, WebP and GIF only. Pillow decodes BMP and
                    # gives a readable error for the files that neither library can decode.
                    image = decode_with_pillow(path, data)
            image = to_uint8(image)

            if reference is None:
                reference = (path, tuple(image.shape))
            if tuple(image.shape) != reference[1]:
                raise size_mismatch_error(path, tuple(image.shape), *reference)

            if images is None:
                images = torch.empty((len(paths), *image.shape), dtype=torch.uint8)
            images[index] = image

    if images is None:
        raise DataError("no image files to decode: add images to the class folders")
    return images


def read_image_bytes(path: Path) -> bytes:
    """Read a file, raising DataError when it is unreadable or empty."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError(
            f"cannot read image {path}: {error.strerror}; check that the file is readable"
        ) from error
    if not data:
        raise DataError(f"image {path} is an empty file: replace or delete it")
    return data


def decode_with_pillow(path: Path, data: bytes) -> torch.Tensor:
    """Decode with Pillow to (3, H, W), uint8 or int32 for 16-bit greyscale; raise DataError on failure."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            if opened.mode in SIXTEEN_BIT_MODES:
                # Kept 16-bit here so that `to_uint8` scales it like torchvision's PNG decoder.
                grey = np.asarray(opened, dtype=np.int32)
                pixels = np.repeat(grey[:, :, None], 3, axis=2)
            else:
                # NOTE: Pillow keeps the high byte of 16-bit colour PNGs, which can differ
                # by one level from the rounding of `to_uint8`.
                pixels = np.asarray(opened.convert("RGB"))
    except UnidentifiedImageError as error:
        raise DataError(
            f"cannot decode image {path}: not a known image format; replace or delete the file"
        ) from error
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as error:
        raise DataError(
            f"cannot decode image {path} ({error}): the file is corrupt; replace or delete it"
        ) from error
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1)


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """Scale a 16-bit image, such as a 16-bit greyscale PNG, down to uint8."""
    if image.dtype == torch.uint8:
        return image
    # 65535 / 257 = 255, so this maps the full 16-bit range onto the full 8-bit range.
    return (image.to(torch.float32) / 257.0).round().clamp(0, 255).to(torch.uint8)


def size_mismatch_error(
    path: Path, shape: tuple[int, ...], reference_path: Path, reference_shape: tuple[int, ...]
) -> DataError:
    """Build the error for an image whose height and width differ from the reference image."""
    return DataError(
        f"image {path} is {shape[1]}x{shape[2]} (height x width) but {reference_path} is "
        f"{reference_shape[1]}x{reference_shape[2]}: resize all images to one size"
    )
