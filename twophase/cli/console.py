"""The CLI's one console, its logging set-up and its error mapping."""

from __future__ import annotations

import functools
import logging
import os
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler

from twophase.core.errors import TwophaseError, is_disk_full

DEBUG_ENVIRONMENT_VARIABLE = "TWOPHASE_DEBUG"

# Progress bars, log lines and tables share this console so that they do not overwrite
# each other; error messages go to standard error.
console = Console()
error_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENVIRONMENT_VARIABLE, "") not in ("", "0")


class _PlainHandler(logging.Handler):
    """Log lines with a time stamp and no wrapping, for output that is not a terminal."""

    def emit(self, record: logging.LogRecord) -> None:
        console.print(self.format(record), markup=False, highlight=False, soft_wrap=True)


def setup_logging(verbose: bool) -> None:
    """Send twophase's log records to the shared console."""
    handler: logging.Handler
    if console.is_terminal:
        handler = RichHandler(console=console, show_path=False, show_time=False, markup=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = _PlainHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger("twophase")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


def print_error(message: str) -> None:
    """Print a one-line error on standard error, without markup and without wrapping."""
    error_console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True, style="red")


def _print_traceback_if_debugging() -> None:
    if debug_enabled():
        error_console.print(traceback.format_exc(), markup=False, highlight=False, soft_wrap=True)


def handle_errors(command: F) -> F:
    """Map known errors to one line and their exit code; unknown ones to exit code 1.

    With TWOPHASE_DEBUG=1 the traceback is printed first; the exit code stays the same.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except TwophaseError as error:
            _print_traceback_if_debugging()
            print_error(str(error))
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            print_error("interrupted; rerun the same command to resume, everything finished before is kept")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as error:
            _print_traceback_if_debugging()
            if is_disk_full(error):
                print_error(
                    f"the disk is full ({error}); free space or choose another --out, then rerun the same "
                    "command: it resumes, and everything finished before is kept"
                )
                raise typer.Exit(1) from None
            if isinstance(error, OSError):
                print_error(f"cannot read or write a file: {error}; check the path and its permissions")
                raise typer.Exit(1) from None
            print_error(
                f"unexpected {type(error).__name__}: {error} "
                f"(set {DEBUG_ENVIRONMENT_VARIABLE}=1 for the traceback and report it as a bug)"
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]
