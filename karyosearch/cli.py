"""The `karyosearch` command line: each command parses its options, then calls one library
function. Heavy imports (torch, faiss) happen inside the commands so `--help` answers fast.

A user mistake (a missing file, a corrupt image, a wrong index) prints one line on stderr and
exits with status 1; only bugs show a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from .errors import UserError

app = typer.Typer(
    help="Search and classify human chromosome images with a Proxy-ResNeXt-CBAM encoder.\n\n"
    "Typical use: `karyosearch train` a model, `karyosearch index` a folder of labelled crops, "
    "then `karyosearch query image.png` to name a chromosome and see its nearest archived "
    "look-alikes; `karyosearch bench` measures Recall@K and accuracy on a test split.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Look at datasets before training or indexing.", no_args_is_help=True)
app.add_typer(data_app, name="data")

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
def progress_bar(description: str, total: int | None, quiet: bool = False) -> Iterator[Callable[[int], None]]:
    """A rich progress bar with rate and time left, on stderr; yields `advance(n)`."""
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn,
                               TextColumn, TimeElapsedColumn, TimeRemainingColumn)

    if quiet:
        yield lambda n: None
        return
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TaskProgressColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


ExistingPath = Annotated[Path, typer.Argument(exists=True, help="A dataset folder or a .csv manifest.")]
LayoutOpt = Annotated[
    str, typer.Option("--layout", help="Dataset layout: auto, bioimlab, gband, folders or csv.")
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]


@data_app.command("inspect")
@user_errors
def data_inspect(path: ExistingPath, layout: LayoutOpt = "auto", as_json: JsonFlag = False) -> None:
    """What a dataset folder holds: layout, images, cells, patients, per-class counts, crop
    sizes, polarity (Q-band bright-on-dark or G-band dark-on-light) and rejected files."""
    from .datasets import read_dataset, survey

    dataset = read_dataset(path, layout)  # type: ignore[arg-type]
    with progress_bar("reading images", len(dataset), quiet=False) as advance:
        report = survey(dataset, advance)
    if as_json:
        print_json(report)
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{report['root']}[/bold]  layout: {report['layout']}")
    console.print(
        f"{report['images']} images, {report['cells']} cells, {report['patients']} patients; "
        f"polarity: {report['polarity']['bright']} bright-on-dark, "
        f"{report['polarity']['dark']} dark-on-light"
    )
    h, w = report["crop_height"], report["crop_width"]
    if h:
        console.print(
            f"crop size after cropping to content (px): height {h['min']:.0f}/{h['median']:.0f}/"
            f"{h['max']:.0f}, width {w['min']:.0f}/{w['median']:.0f}/{w['max']:.0f} (min/median/max)"
        )
    table = Table("class", "images", title="images per class")
    for name, n in report["classes"].items():
        table.add_row(name, str(n))
    console.print(table)
    console.print(f"{len(report['rejected'])} rejected")
    for r in report["rejected"][:20]:
        console.print(f"  {r['path']}: {r['reason']}", markup=False)
    if len(report["rejected"]) > 20:
        console.print(f"  ... and {len(report['rejected']) - 20} more (see --json)")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
