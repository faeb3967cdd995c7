"""Step values and step grids, in optimizer iterations or epochs.

A step value is `300` (iterations), `5ep` or `2.5ep` (epochs, rounded to the nearest
step), or `end` (the last step of training). A grid is a comma-separated list of items,
each a step value or a range:

- `lin:START:STOP:N`: N evenly spaced steps from START to STOP, both included;
- `log:START:STOP:N`: N log-spaced steps from START to STOP, both included; with
  START = 0, step 0 followed by N - 1 log-spaced steps from 1 to STOP;
- `every:K`: 0, K, 2K, ... up to the end of training.

Steps are rounded to integers and duplicates are dropped, so `log:1:100:50` contains fewer
than 50 steps. Items must follow each other in increasing order, for example
`0,log:10:2000:8,5000`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from twophase.core.errors import GridError

_STEP_PATTERN = re.compile(r"^(?:(?P<end>end)|(?P<epochs>\d+(?:\.\d+)?)ep|(?P<steps>\d+))$")


@dataclass(frozen=True)
class Step:
    """A step given in iterations, in epochs, or as the end of training."""

    iterations: int | None = None
    epochs: float | None = None
    is_end: bool = False

    @classmethod
    def parse(cls, text: str | int) -> Step:
        """Parse `300`, `5ep`, `2.5ep` or `end`; raise GridError on anything else."""
        if isinstance(text, bool):
            raise GridError(f"invalid step {text!r}: expected an integer such as 300, epochs such as 5ep, or end")
        if isinstance(text, int):
            if text < 0:
                raise GridError(f"invalid step {text}: steps cannot be negative")
            return cls(iterations=text)
        stripped = str(text).strip()
        if re.fullmatch(r"-\d+(\.\d+)?(ep)?", stripped):
            raise GridError(f"invalid step {text!r}: steps cannot be negative")
        match = _STEP_PATTERN.match(stripped)
        if match is None:
            raise GridError(
                f"invalid step {text!r}: expected an integer such as 300, epochs such as 5ep, or end"
            )
        if match["end"]:
            return cls(is_end=True)
        if match["epochs"]:
            return cls(epochs=float(match["epochs"]))
        return cls(iterations=int(match["steps"]))

    def resolve(self, steps_per_epoch: int, total_steps: int | None = None) -> int:
        """Convert to an integer step; `end` needs `total_steps`."""
        if self.is_end:
            if total_steps is None:
                raise GridError("'end' cannot be used here: the length of training is not known yet")
            return total_steps
        if self.epochs is not None:
            return int(round(self.epochs * steps_per_epoch))
        assert self.iterations is not None
        return self.iterations

    def __str__(self) -> str:
        if self.is_end:
            return "end"
        if self.epochs is not None:
            return f"{self.epochs:g}ep"
        return str(self.iterations)


@dataclass(frozen=True)
class _Range:
    kind: str
    start: Step
    stop: Step
    count: int

    def resolve(self, steps_per_epoch: int, total_steps: int) -> list[int]:
        start = self.start.resolve(steps_per_epoch, total_steps)
        stop = self.stop.resolve(steps_per_epoch, total_steps)
        text = f"{self.kind}:{self.start}:{self.stop}:{self.count}"
        if stop <= start:
            raise GridError(f"invalid grid item {text!r}: it runs from step {start} to step {stop}; STOP must exceed START")
        if self.kind == "log" and start == 0:
            # Step 0 has no logarithm: the range is 0 followed by N - 1 log-spaced steps
            # from 1 to STOP, the usual grid for perturbation steps.
            tail = np.geomspace(1, stop, self.count - 1) if self.count > 2 else np.array([stop])
            values = np.concatenate([[0], tail])
        elif self.kind == "log":
            values = np.geomspace(start, stop, self.count)
        else:
            values = np.linspace(start, stop, self.count)
        return [int(round(v)) for v in values]


@dataclass(frozen=True)
class _Every:
    interval: Step

    def resolve(self, steps_per_epoch: int, total_steps: int) -> list[int]:
        interval = self.interval.resolve(steps_per_epoch, total_steps)
        if interval <= 0:
            raise GridError(f"invalid grid item 'every:{self.interval}': the interval resolves to {interval} steps; it must be at least 1")
        return list(range(0, total_steps + 1, interval))


@dataclass(frozen=True)
class _Single:
    step: Step

    def resolve(self, steps_per_epoch: int, total_steps: int) -> list[int]:
        return [self.step.resolve(steps_per_epoch, total_steps)]


@dataclass(frozen=True)
class StepGrid:
    """A parsed step grid; `resolve` turns it into increasing integer steps."""

    text: str
    items: tuple[_Range | _Every | _Single, ...]

    @classmethod
    def parse(cls, text: str) -> StepGrid:
        """Parse a grid such as `0,100,2000`, `lin:0:2000:11` or `log:10:2000:8`."""
        if not isinstance(text, str):
            raise GridError(f"invalid step grid {text!r}: expected a string such as lin:0:2000:11")
        stripped = text.strip()
        if not stripped:
            raise GridError("invalid step grid '': it is empty; give steps such as 0,100,200 or lin:0:end:11")
        items = tuple(_parse_item(part.strip(), text) for part in stripped.split(","))
        return cls(text=stripped, items=items)

    def resolve(self, steps_per_epoch: int, total_steps: int) -> tuple[int, ...]:
        """Return the grid's steps, increasing and without duplicates.

        Raises GridError when an item comes before the previous one or a step lies past
        `total_steps`, the end of training.
        """
        steps: list[int] = []
        for item in self.items:
            values = item.resolve(steps_per_epoch, total_steps)
            if steps and values[0] < steps[-1]:
                raise GridError(
                    f"invalid step grid {self.text!r}: it is not increasing, step {values[0]} follows "
                    f"step {steps[-1]}; list the items in increasing order"
                )
            for value in values:
                if value > total_steps:
                    raise GridError(
                        f"invalid step grid {self.text!r}: step {value} lies past the end of training "
                        f"at step {total_steps}; lower it or train longer"
                    )
                if not steps or value != steps[-1]:
                    steps.append(value)
        return tuple(steps)

    def __str__(self) -> str:
        return self.text


def _parse_item(part: str, text: str) -> _Range | _Every | _Single:
    if not part:
        raise GridError(f"invalid step grid {text!r}: it has an empty item; remove the extra comma")
    kind, colon, rest = part.partition(":")
    if not colon:
        return _Single(_parse_step_in(part, text))

    where = "" if part == text.strip() else f" in {text!r}"
    fields = rest.split(":")
    if kind == "every":
        if len(fields) != 1:
            raise GridError(f"invalid grid item {part!r}{where}: expected every:K, such as every:100")
        return _Every(_parse_step_in(fields[0], text))
    if kind not in ("lin", "log"):
        raise GridError(
            f"invalid grid item {part!r}{where}: unknown range {kind!r}; use lin:START:STOP:N, "
            "log:START:STOP:N or every:K"
        )
    if len(fields) != 3:
        raise GridError(f"invalid grid item {part!r}{where}: expected {kind}:START:STOP:N, such as {kind}:10:2000:8")
    start, stop, count_text = fields
    if not count_text.isdigit() or int(count_text) < 2:
        raise GridError(f"invalid grid item {part!r}{where}: N must be an integer of at least 2, got {count_text!r}")
    return _Range(kind, _parse_step_in(start, text), _parse_step_in(stop, text), int(count_text))


def _parse_step_in(value: str, text: str) -> Step:
    try:
        return Step.parse(value)
    except GridError as error:
        if value.strip() == text.strip():
            raise
        raise GridError(f"{error} (in step grid {text!r})") from None


def epochs_of(step: int, steps_per_epoch: int) -> float:
    """Convert a step to epochs, for display."""
    return step / steps_per_epoch if steps_per_epoch else math.nan
