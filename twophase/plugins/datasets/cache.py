"""Safetensors cache files that store decoded tensors under a key of their source files."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

logger = logging.getLogger(__name__)


def read_cache(
    path: Path, key: str, names: set[str]
) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None:
    """Return the tensors and metadata of the cache file at `path`, or None to rebuild it.

    The file must exist, store `key` in its metadata and contain exactly the tensors in
    `names`. An unreadable file is logged as a warning and reported as None.
    """
    if not path.is_file():
        logger.info("No cache file at %s, so decoding the images", path)
        return None

    try:
        with safe_open(str(path), framework="pt") as cache:
            metadata = cache.metadata() or {}
            if metadata.get("key") != key:
                logger.info("Cache file %s is stale because the source files changed, so rebuilding it", path)
                return None
            if set(cache.keys()) != names:
                logger.info("Cache file %s does not contain exactly %s, so rebuilding it", path, sorted(names))
                return None
            tensors = {name: cache.get_tensor(name) for name in names}
    except (SafetensorError, OSError) as error:
        logger.warning("Failed to read cache file %s (%s), so rebuilding it", path, error)
        return None

    logger.info("Reusing cache file %s", path)
    return tensors, metadata


def write_cache(
    path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
) -> None:
    """Write tensors and string metadata to `path` atomically.

    The file is written under a temporary name in the same folder and then renamed, so
    readers and concurrent writers never open a partial file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # NOTE: safetensors 0.8 creates the file with mode 0600, so other users cannot read
    # it and a cache folder shared between users does not share decoded images.
    temporary_path = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")

    try:
        save_file(dict(tensors), str(temporary_path), metadata=dict(metadata))
        os.replace(temporary_path, path)
    except BaseException:
        temporary_path.unlink(missing_ok=True)
        raise
    logger.info("Wrote cache file %s", path)
