"""What every command shares: one error line and exit 1 for a user's mistake, progress bars
on stderr, JSON on stdout, and the common options.

A user mistake (a missing file, a corrupt image, a wrong index) prints one line on stderr and
exits with status 1; only bugs show a traceback.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from ..errors import UserError

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str) -> typer.Exit:
    """Print one error line on stderr and return the exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def user_errors(command: F) -> F:
    """Turn a UserError (or a missing file) raised by a command into one line and exit 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except UserError as err:
            raise fail(str(err)) from None
        except FileNotFoundError as err:
            raise fail(f"{err.filename}: no such file or folder") from None
        except KeyboardInterrupt:
            raise fail("interrupted; nothing was half-written") from None

    return wrapper  # type: ignore[return-value]


@contextmanager
def progress_bar(
    description: str, total: int | None, quiet: bool = False, rate: str | None = None
) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr with time left (and `rate`, e.g. "img/s"); yields
    `advance(n)`. Nothing is drawn when `quiet` or when there is nothing to do."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:.1f} {rate}" if speed else f"- {rate}")

    if quiet or total == 0:
        yield lambda n: None
        return
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        *([Rate()] if rate else []),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


def need_path(path: Path | None, file: bool = False, what: str = "file") -> None:
    """Exit 1 with one line when `path` (if given) does not exist, or with `file` is a folder.

    Paths are checked here rather than by typer's `exists=True`, which exits 2 with a usage
    box: a missing path is the user's mistake (exit 1), like every other bad input; exit 2 is
    left to usage errors (an unknown option, a missing argument, a value of the wrong type).
    """
    if path is None:
        return
    if not os.path.exists(path):
        raise fail(f"{path}: no such file or folder")
    if file and os.path.isdir(path):
        raise fail(f"{path}: a folder, not a {what}")


def need_output_file(path: Path | None) -> None:
    """Exit 1 with one line, before any work, when an output file's path is a folder."""
    if path is not None and str(path) != "-" and os.path.isdir(path):
        raise fail(f"{path}: a folder; give a file path to write to")


ExistingPath = Annotated[Path, typer.Argument(help="A dataset folder or a .csv manifest.")]
LayoutOpt = Annotated[
    str, typer.Option("--layout", help="Dataset layout: auto, bioimlab, gband, folders or csv.")
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]

DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
IndexDirOpt = Annotated[
    Path, typer.Option("--index", help="Index folder (FAISS index, HDF5 store, card.json).")
]
DEFAULT_INDEX = Path("indexes/default")

_BARS: list[Any] = []


def _open_bar(description: str, total: int | None) -> Callable[[int], None]:
    """A progress bar that stays until the next one opens (epochs follow one another)."""
    _close_bars()
    bar = progress_bar(description, total)
    advance = bar.__enter__()
    _BARS.append(bar)
    return advance


def _close_bars() -> None:
    while _BARS:
        _BARS.pop().__exit__(None, None, None)


def bars(description: str, total: int | None) -> Callable[[int], None]:
    """A progress-bar factory for library functions that take `progress(description, total)`:
    each bar stays until the next one opens; `close_bars` ends the last."""
    return _open_bar(description, total)


close_bars = _close_bars
