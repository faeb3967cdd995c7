"""Device selection and the deterministic mode on CUDA."""

from __future__ import annotations

import logging
import os

import torch

from twophase.core.errors import UsageError

logger = logging.getLogger(__name__)


def resolve_device(requested: str) -> torch.device:
    """Turn `auto`, `cpu` or `cuda` into a torch device; reject `cuda` without CUDA."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise UsageError("invalid device 'cuda': CUDA is not available on this machine; use --device cpu or auto")
    return torch.device(requested)


def configure_determinism(device: torch.device, deterministic: bool) -> None:
    """Set the global flags that make CUDA runs repeatable, or let cuDNN pick fast kernels.

    CPU runs are repeatable without any flag. On CUDA, cuDNN's benchmark mode and TF32
    matrix products change results from run to run. Some kernels (scatter, index_add)
    use atomics, and `torch.use_deterministic_algorithms` replaces them or raises.
    """
    if device.type != "cuda":
        return
    if deterministic:
        # cuBLAS needs a fixed workspace for repeatable results. It reads this variable
        # when its handle is created, so it must be set before the first matrix product.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cuda.matmul.allow_tf32 = not deterministic
    torch.backends.cudnn.allow_tf32 = not deterministic
    torch.use_deterministic_algorithms(deterministic, warn_only=False)
    logger.info("CUDA deterministic mode %s", "on" if deterministic else "off")
