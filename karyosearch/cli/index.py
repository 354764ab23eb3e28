"""`karyosearch index`, `remove` and `query`: build and search an index of chromosome images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import UserError
from ..search.faiss_index import FLAT_MAX, outgrown
from .common import (
    DEFAULT_INDEX,
    DeviceOpt,
    IndexDirOpt,
    JsonFlag,
    LayoutOpt,
    print_json,
    progress_bar,
    user_errors,
)


@user_errors
def index_command(
    path: Annotated[
        Path | None,
        typer.Argument(
            help="A dataset folder or a .csv manifest of labelled crops (not with --rebuild or "
            "--merge)."
        ),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            help="Checkpoint that embeds the images (default: the index's own model; for a new "
            "index the shipped encoder for the images' stain, Q- or G-band, from models/).",
        ),
    ] = None,
    index: IndexDirOpt = DEFAULT_INDEX,
    factory: Annotated[
        str | None,
        typer.Option(
            "--factory",
            help="FAISS factory string, e.g. Flat, HNSW32, IVF1024,SQ8, or auto: chosen by "
            "archive size, nprobe/efSearch tuned for recall@10 >= 0.95 against exact search "
            "(auto:0.99 for another target), the choice recorded in the card "
            "(default: the index's own, else Flat); a new one rebuilds the FAISS index. "
            "auto on an existing index keeps its choice, unless a Flat index has grown past "
            f"{FLAT_MAX:,} images: then it chooses again.",
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per batch.")] = 64,
    layout: LayoutOpt = "auto",
    prune: Annotated[
        bool, typer.Option("--prune", help="Drop indexed files under PATH that are gone from it.")
    ] = False,
    rebuild: Annotated[
        bool,
        typer.Option(
            "--rebuild",
            help="Re-embed every indexed file with --model (default: the index's own) and write "
            "a fresh index: mends an index holding non-finite vectors.",
        ),
    ] = False,
    merge: Annotated[
        bool,
        typer.Option(
            "--merge",
            help="Join the index's segments into one and drop deleted rows (same answers).",
        ),
    ] = False,
    device: DeviceOpt = "auto",
    as_json: JsonFlag = False,
) -> None:
    """Embed the images of a dataset into an index (on an update: only new and changed files).

    A file counts as changed when its bytes (SHA-1) differ from those indexed. Unreadable
    images are reported with the reason and skipped; the rest is indexed. Each update adds a
    small segment (the archive is never rewritten); --merge joins them.
    """
    from ..search.maintenance import merge as merge_index
    from ..search.maintenance import rebuild_index
    from ..search.update import apply_update, plan_update

    if rebuild and merge:
        raise UserError("give --rebuild or --merge, not both")
    if (rebuild or merge) and path is not None:
        raise UserError(f"--{'rebuild' if rebuild else 'merge'} takes no dataset PATH ({path})")
    if merge:
        merged = merge_index(index)
        if as_json:
            print_json(merged.to_dict())
        else:
            typer.echo(
                f"{merged.index}: {merged.count} images; {merged.segments_before} segments -> "
                f"{merged.segments_after}, {merged.dropped} deleted rows dropped"
            )
        return
    if rebuild:
        from ..search.folder import read_card

        total = read_card(Path(index)).count  # the bar's length: the card alone is read
        with progress_bar("re-embedding", total, rate="img/s") as advance:
            report = rebuild_index(index, model, batch_size, advance, device)
    else:
        if path is None:
            raise UserError("give a dataset PATH to index, or --rebuild or --merge")
        plan = plan_update(index, path, model, factory, layout, prune, device)  # type: ignore[arg-type]
        if plan.model_note:
            typer.echo(plan.model_note, err=True)
        with progress_bar("embedding", len(plan.to_embed), rate="img/s") as advance:
            report = apply_update(plan, batch_size, advance)
    if outgrown(report.factory, report.count):
        typer.echo(
            f"note: {report.count} images in an exact (Flat) index; above {FLAT_MAX:,} an "
            f"approximate one answers faster: index PATH --index {report.index} --factory auto",
            err=True,
        )
    if as_json:
        print_json(report.to_dict())
        return
    typer.echo(
        f"{report.index}: {report.count} images ({report.factory}); added {report.added}, "
        f"updated {report.updated}, unchanged {report.unchanged}, removed {report.removed}, "
        f"rejected {len(report.rejected)}"
        + (
            f"; {report.embedded} embedded at {report.images_per_s:.1f} img/s"
            if report.embedded
            else ""
        )
    )
    if report.archive is not None:
        from ..search.archive import describe

        typer.echo(describe(report.archive))
    for r in report.rejected[:20]:
        typer.echo(f"  rejected {r['path']}: {r['reason']}", err=True)
    if len(report.rejected) > 20:
        typer.echo(f"  ... and {len(report.rejected) - 20} more (see --json)", err=True)


@user_errors
def remove_command(
    paths: Annotated[
        list[Path], typer.Argument(help="Indexed image files, or folders: every file under them.")
    ],
    index: IndexDirOpt = DEFAULT_INDEX,
    as_json: JsonFlag = False,
) -> None:
    """Drop images from an index (the files themselves are left alone).

    A path that is a symlink loop cannot be matched to an indexed file: it is reported and
    left alone (exit status 1), the others are removed.
    """
    from ..search.update import remove

    if not index.is_dir():  # checked here: taking the writer lock would make its folders
        raise UserError(f"{index}: no such index folder")
    usable, loops = [], []
    for p in paths:
        try:
            p.expanduser().resolve()
        except (RuntimeError, OSError):  # a symlink loop: Path.resolve raises RuntimeError
            loops.append(p)
        else:
            usable.append(p)
    for p in loops:
        typer.echo(f"error: {p}: a symlink loop; it names no indexed file", err=True)
    if not usable:
        raise typer.Exit(1)
    report = remove(index, usable)
    if not report.removed:
        raise UserError(f"{index}: none of the given paths is in the index")
    if as_json:
        print_json(
            {
                **report.to_dict(),
                "errors": [{"path": str(p), "reason": "a symlink loop"} for p in loops],
            }
        )
    else:
        typer.echo(f"{report.index}: removed {report.removed}, {report.count} left")
        for p in report.not_found:
            typer.echo(f"  not in the index: {p}", err=True)
    if loops:
        raise typer.Exit(1)


@user_errors
def query_command(
    images: Annotated[
        list[Path],
        typer.Argument(help="Chromosome images, or folders of them (searched recursively)."),
    ],
    index: IndexDirOpt = DEFAULT_INDEX,
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="Neighbours per image.")] = 8,
    model: Annotated[
        Path | None,
        typer.Option(
            "--model", help="Checkpoint to embed with (default: the one that built the index)."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per batch.")] = 64,
    device: DeviceOpt = "auto",
    as_json: JsonFlag = False,
) -> None:
    """Name chromosome images and list their k most similar indexed images.

    The call mixes the encoder's class proxies with the vote of the 5 nearest labelled
    crops of the index (the lab's own archive: embeddings travel between labs better than
    proxies do); beside it, the proxies alone (cosine and margin to the runner-up; for the
    plain resnext network, the softmax probability) and the vote of the k neighbours listed.

    A file that cannot be read (missing, not an image, a named pipe...) is reported on
    stderr and the others are answered; the exit status is then 1 (JSON: `errors`).
    """
    from ..search.engine import query

    run = query(images, index, k, model, batch_size, device)
    if as_json:
        print_json(run.to_dict())
    else:
        _print_results(run.results)
    for e in run.errors:
        typer.echo(f"error: {e['path']}: {e['reason']}", err=True)
    if run.errors:
        raise typer.Exit(1)


def _print_results(results: list) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for r in results:
        p, c = r.predicted, r.call
        head = f"[bold]{r.query}[/bold]"
        if c is not None:
            head += f"  call [bold]{c.label}[/bold] (p {c.score:.2f}, margin {c.margin:.2f})"
        if p is not None:
            head += f"  proxies predicted {p.label} ({p.kind} {p.score:.3f}, margin {p.margin:.3f})"
        head += f"  neighbours vote {r.knn_label or '-'}"
        console.print(head)
        table = Table("rank", "score", "label", "cell", "id")
        table.add_column("path", overflow="fold")  # whole, so it can be opened
        for n in r.neighbours:
            table.add_row(
                str(n.rank), f"{n.score:.4f}", n.label or "-", n.cell_id or "-", str(n.id), n.path
            )
        console.print(table)
