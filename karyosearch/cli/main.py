"""The `karyosearch` command line: each command parses its options, then calls one library
function and prints what it returns. Heavy imports (torch, faiss) happen inside the commands
so `--help` answers fast.

One module per command group: `data` (inspect), `train`, `bench`, `index` (index, remove,
query), `karyotype` (a cell, and fit); `common` holds what they share.
"""

from __future__ import annotations

import typer

from ..server.command import serve
from .bench import bench_command
from .data import data_app
from .index import index_command, query_command, remove_command
from .karyotype import karyotype_app
from .train import export_command, train_command

app = typer.Typer(
    help="Search and classify human chromosome images with a Proxy-ResNeXt-CBAM encoder.\n\n"
    "Typical use: `karyosearch train` a model, `karyosearch index` a folder of labelled crops, "
    "then `karyosearch query image.png` to name a chromosome and see its nearest archived "
    "look-alikes; `karyosearch karyotype CELL_DIR` reads a whole cell's karyotype (46,XY; "
    "47,XX,+21); `karyosearch bench` measures Recall@K and accuracy on a test split.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",  # docstring paragraphs re-flow to the terminal's width
    epilog="Exit status: 0 done; 1 a user error: bad input, a missing or unreadable path, a "
    "corrupt image or checkpoint, a wrong index (one `error:` line on stderr; `query` also "
    "exits 1 when some of its images failed, after answering the others); 2 a usage error: "
    "an unknown option, a missing argument, a value of the wrong type (typer's usage box).",
)
app.add_typer(data_app, name="data")
app.command("train")(train_command)
app.command("export")(export_command)
app.command("bench")(bench_command)
app.command("index")(index_command)
app.command("remove")(remove_command)
app.command("query")(query_command)
app.add_typer(karyotype_app, name="karyotype")
app.command("serve")(serve)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
