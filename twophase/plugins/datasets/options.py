"""Validation of the `options` mapping that a data set request carries."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from numbers import Integral
from typing import Any

from twophase.core.errors import UsageError


def check_option_names(dataset: str, options: Mapping[str, Any], known: Collection[str]) -> None:
    """Raise UsageError on the first option name that `dataset` does not take."""
    for name in options:
        if name not in known:
            known_list = ", ".join(sorted(known)) if known else "none"
            raise UsageError(
                f"unknown option {name!r} for data set {dataset!r}: known options are {known_list}"
            )


def int_option(
    dataset: str,
    options: Mapping[str, Any],
    name: str,
    default: int,
    minimum: int,
    maximum: int | None = None,
) -> int:
    """Return option `name` as an int in [minimum, maximum], or `default` when it is absent.

    Booleans, floats such as 2.0 and numeric strings raise UsageError: the caller must
    pass a parsed integer, so a typo never turns into a silently truncated value.
    """
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise UsageError(
            f"option {name!r} of data set {dataset!r} must be an integer, "
            f"got {value!r} ({type(value).__name__})"
        )

    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        allowed = f"at least {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise UsageError(f"option {name!r} of data set {dataset!r} must be {allowed}, got {value}")
    return value
