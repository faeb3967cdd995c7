"""Exceptions that the CLI maps to a one-line message and an exit code."""

from __future__ import annotations

import difflib
import errno
from collections.abc import Iterable

# ENOSPC and EDQUOT, and the texts of Rust's I/O errors, which safetensors wraps in its own
# exception type. NOTE: the tests raise OSError; a real full disk under safetensors was not observed.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
DISK_FULL_TEXTS = ("No space left on device", "Disk quota exceeded", "os error 28", "StorageFull")


class TwophaseError(Exception):
    """A known failure whose message states what failed and what to do next."""

    exit_code = 1


class UsageError(TwophaseError):
    """Invalid user input: an option, a config value, a step grid or a name."""

    exit_code = 2


class ConfigError(UsageError):
    """A config file or config value that cannot be used."""


class GridError(UsageError):
    """A step grid or step value that is malformed or does not fit the run."""


class UnknownNameError(UsageError):
    """A model, data set, perturbation or metric name that no plugin registers."""


class DataError(TwophaseError):
    """A data set that is missing, empty or unreadable."""


class PluginError(TwophaseError):
    """A plugin that fails validation or registers a name that another plugin owns."""


class StateError(TwophaseError):
    """A saved training state that is missing, damaged or from another run."""


class OutputError(TwophaseError):
    """An output folder that cannot be used for this run."""


class TrainingDivergedError(TwophaseError):
    """A training loss that became NaN or infinite."""


class TrainingInterrupted(TwophaseError):
    """Training stopped by SIGINT after saving a state that a rerun resumes from."""

    exit_code = 130


def is_disk_full(error: BaseException) -> bool:
    """Return True when `error`, or an error it was raised from, reports a full disk or quota."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in DISK_FULL_ERRNOS:
            return True
        if any(text in str(seen) for text in DISK_FULL_TEXTS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def unknown_name(kind: str, name: str, known: Iterable[str], listing: str = "`twophase plugins` lists them") -> UnknownNameError:
    """Build the error for an unknown name, listing close matches or else the known names.

    `listing` points to a list of the names, for when there are too many to show.
    """
    known = sorted(known)
    matches = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    if matches:
        hint = "did you mean " + ", ".join(matches) + "?"
    elif len(known) <= 12:
        hint = "known: " + ", ".join(known)
    else:
        hint = f"{len(known)} are known; {listing}"
    return UnknownNameError(f"unknown {kind} {name!r}: {hint}")
