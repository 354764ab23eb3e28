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
from .server.command import serve

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


ExistingPath = Annotated[
    Path, typer.Argument(exists=True, help="A dataset folder or a .csv manifest.")
]
LayoutOpt = Annotated[
    str, typer.Option("--layout", help="Dataset layout: auto, bioimlab, gband, folders or csv.")
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]


@data_app.command("inspect")
@user_errors
def data_inspect(path: ExistingPath, layout: LayoutOpt = "auto", as_json: JsonFlag = False) -> None:
    """What a dataset folder holds: layout, images, cells, patients, per-class counts, crop
    sizes, polarity (Q-band bright-on-dark or G-band dark-on-light) and rejected files.

    Cells whose labels their crops' sizes contradict are listed too: a crop more than 10 sd
    from its labelled class's size relative to its cell (labels shifted by a class, a
    fragment labelled as a chromosome)."""
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
            f"{h['max']:.0f}, width {w['min']:.0f}/{w['median']:.0f}/{w['max']:.0f} "
            "(min/median/max)"
        )
    table = Table("class", "images", title="images per class")
    for name, n in report["classes"].items():
        table.add_row(name, str(n))
    console.print(table)
    audit = report["label_audit"]
    if audit:
        console.print(
            f"[bold]{len(audit)} cell(s) whose labels their crop sizes contradict[/bold] "
            "(a crop far from its labelled class's size within the cell):"
        )
        for a in audit:
            crops = ", ".join(
                f"{Path(c['path']).name} ({c['label']}, {c['z']:+.0f} sd)" for c in a["crops"]
            )
            console.print(f"  {a['cell']}: {crops}", markup=False)
    console.print(f"{len(report['rejected'])} rejected")
    for r in report["rejected"][:20]:
        console.print(f"  {r['path']}: {r['reason']}", markup=False)
    if len(report["rejected"]) > 20:
        console.print(f"  ... and {len(report['rejected']) - 20} more (see --json)")


@app.command("train")
@user_errors
def train_command(
    data: Annotated[
        Path, typer.Option("--data", exists=True, help="Labelled dataset folder or .csv manifest.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Where to write the best checkpoint (.pt).")],
    arch: Annotated[
        str, typer.Option("--arch", help="resnext, proxy-resnext or proxy-resnext-cbam.")
    ] = "proxy-resnext-cbam",
    split: Annotated[
        str,
        typer.Option(
            "--split",
            help="paper (random over images), cell (grouped by patient/cell) or karyo "
            "(abnormal patients held out).",
        ),
    ] = "paper",
    seed: Annotated[
        int, typer.Option("--seed", help="Seeds the split, initialisation, batches, augmentation.")
    ] = 0,
    epochs: Annotated[
        int | None, typer.Option("--epochs", help="Maximum epochs (default: the preset's).")
    ] = None,
    image_size: Annotated[
        int | None, typer.Option("--image-size", help="Input side S in px (default: the preset's).")
    ] = None,
    preset: Annotated[
        str,
        typer.Option("--preset", help="default (fast from scratch on CPU) or paper (SGD, 224 px)."),
    ] = "default",
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    layout: LayoutOpt = "auto",
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from OUT.last (same recipe).")
    ] = False,
    max_minutes: Annotated[
        float | None,
        typer.Option("--max-minutes", help="Stop after this wall time, keeping the best."),
    ] = None,
    init: Annotated[
        Path | None,
        typer.Option(
            "--init",
            exists=True,
            dir_okay=False,
            help="Start from this checkpoint's weights instead of at random (transfer, e.g. "
            "from a G-band encoder to Q-band): the same network and stem, at any input size; "
            "refused if its training saw this split's test images.",
        ),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Change one field of the preset's recipe, KEY=VALUE (a Python literal), e.g. "
            "--set rotate=30.0 --set 'scale=(0.8,1.2)' --set canvas_percentile=95.0. "
            "Repeatable; fields: see karyosearch.train.Recipe.",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Train an encoder (from scratch, or from --init) and keep the best validation checkpoint.

    The split is made from --seed; the test part is never seen. Each epoch prints wall time,
    training loss, validation loss and accuracy; OUT.last allows --resume after a stop.
    """
    from .model import ARCHS
    from .splits import SPLITS
    from .train import TrainOptions, parse_overrides, train

    if arch not in ARCHS:
        raise fail(f"unknown --arch {arch!r}: choose {', '.join(ARCHS)}")
    if split not in SPLITS:
        raise fail(f"unknown --split {split!r}: choose {', '.join(SPLITS)}")

    def progress(description: str, total: int | None) -> Callable[[int], None]:
        return _open_bar(description, total)

    opts = TrainOptions(
        data=str(data),
        out=str(out),
        arch=arch,
        split=split,
        seed=seed,
        preset=preset,
        epochs=epochs,
        image_size=image_size,
        device=device,
        layout=layout,
        resume=resume,
        max_minutes=max_minutes,
        init=str(init) if init is not None else None,
        overrides=parse_overrides(overrides or []),
    )
    try:
        record = train(opts, log=lambda line: typer.echo(line, err=as_json), progress=progress)
    finally:
        _close_bars()
    summary = {
        k: record[k]
        for k in (
            "arch",
            "split",
            "seed",
            "preset",
            "image_size",
            "best_epoch",
            "val_accuracy",
            "val_loss",
            "train_seconds",
            "device",
        )
    }
    summary["checkpoint"] = str(out)
    if as_json:
        print_json(summary)
    else:
        typer.echo(
            f"best epoch {summary['best_epoch']}: val accuracy {summary['val_accuracy']:.4f}, "
            f"{summary['train_seconds'] / 60:.1f} min -> {out}"
        )


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


@app.command("bench")
@user_errors
def bench_command(
    data: Annotated[
        Path, typer.Option("--data", exists=True, help="Labelled dataset folder or .csv manifest.")
    ],
    model: Annotated[
        Path, typer.Option("--model", exists=True, dir_okay=False, help="Checkpoint (.pt) to test.")
    ],
    split: Annotated[
        str | None,
        typer.Option("--split", help="paper or cell (default: the split the model trained on)."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Split seed (default: the model's training seed).")
    ] = None,
    json_out: Annotated[
        Path | None,
        typer.Option("--json", help="Write the result JSON to this file ('-': stdout)."),
    ] = None,
    figures_dir: Annotated[
        Path | None,
        typer.Option("--figures", help="Write t-SNE, confusion and Recall@K PNGs here."),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Images per forward pass.")
    ] = 64,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    layout: LayoutOpt = "auto",
) -> None:
    """Test a checkpoint on its split's test part: accuracy, Recall@K, per-class accuracy.

    Reports accuracy, macro precision / recall / F1, Recall@1/2/4/8 (the share of test
    queries with a same-class image among their K nearest other test images; not the
    information-retrieval recall) and per-class accuracy.

    The split is rebuilt with the model's own split and seed; another split or seed of the
    dataset it trained on is refused, as its test images would include training images.
    """

    from rich.console import Console
    from rich.table import Table

    from .atomic import atomic_path
    from .datasets import read_dataset
    from .evaluate import evaluate, figures
    from .model import load_encoder
    from .train import pick_device

    to_stdout = json_out is not None and str(json_out) == "-"
    dataset = read_dataset(data, layout)  # type: ignore[arg-type]
    encoder = load_encoder(model, pick_device(device))
    with progress_bar("embedding test images", None) as advance:
        ev = evaluate(encoder, dataset, split, seed, batch_size=batch_size, progress=advance)
    r = ev.result
    r["model_path"] = str(model)
    for line in r["warnings"]:
        typer.echo(f"warning: {line}", err=True)
    if r["errors"]:
        typer.echo(
            f"warning: {len(r['errors'])} test image(s) unreadable and left out "
            f"(listed under 'errors' in the JSON)",
            err=True,
        )
    console = Console(stderr=to_stdout)
    console.print(
        f"[bold]{model}[/bold]  {r['arch']}, {r['image_size']} px, fingerprint "
        f"{r['fingerprint']}; {r['split']} split, seed {r['seed']}: {r['n_test']} test "
        f"images of {dataset.root}"
    )
    table = Table("metric", "%", title="test set")
    for name, key in (
        ("accuracy", "accuracy"),
        ("precision (macro)", "precision"),
        ("recall (macro)", "recall"),
        ("F1 (macro)", "f1"),
    ):
        table.add_row(name, f"{100 * r[key]:.2f}")
    for k, v in r["recall_at_k"].items():
        table.add_row(f"Recall@{k}", f"{100 * v:.2f}")
    console.print(table)
    cells = [
        (name, str(r["per_class_support"][name]), "-" if acc is None else f"{100 * acc:.1f}")
        for name, acc in r["per_class_accuracy"].items()
    ]
    per_class = Table(*(["class", "images", "acc %"] * 3), title="per-class accuracy")
    rows = (len(cells) + 2) // 3
    cells += [("", "", "")] * (3 * rows - len(cells))
    for i in range(rows):
        per_class.add_row(*(c for j in range(3) for c in cells[i + j * rows]))
    console.print(per_class)
    if figures_dir is not None:
        for path in figures(r, ev.embeddings, ev.labels, figures_dir):
            console.print(f"figure: {path}", soft_wrap=True, markup=False)
    if to_stdout:
        print_json(r)
    elif json_out is not None:
        with atomic_path(json_out) as tmp:
            tmp.write_text(json.dumps(r, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        console.print(f"result: {json_out}", soft_wrap=True, markup=False)


# -- index, remove, query (karyosearch.engine) ----------------------------------------------

IndexDirOpt = Annotated[
    Path, typer.Option("--index", help="Index folder (FAISS index, HDF5 store, card.json).")
]
_DEFAULT_INDEX = Path("indexes/default")


@app.command("index")
@user_errors
def index_command(
    path: Annotated[
        Path, typer.Argument(help="A dataset folder or a .csv manifest of labelled crops.")
    ],
    model: Annotated[Path, typer.Option("--model", help="Checkpoint that embeds the images.")],
    index: IndexDirOpt = _DEFAULT_INDEX,
    factory: Annotated[
        str | None,
        typer.Option(
            "--factory",
            help="FAISS factory string, e.g. Flat, HNSW32, IVF1024,PQ64 "
            "(default: the index's own, else Flat); a new one rebuilds the FAISS index.",
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per batch.")] = 64,
    layout: LayoutOpt = "auto",
    prune: Annotated[
        bool, typer.Option("--prune", help="Drop indexed files under PATH that are gone from it.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Embed the images of a dataset into an index (on an update: only new and changed files).

    A file counts as changed when its bytes (SHA-1) differ from those indexed. Unreadable
    images are reported with the reason and skipped; the rest is indexed.
    """
    from .engine import apply_update, plan_update

    plan = plan_update(index, path, model, factory=factory, layout=layout, prune=prune)  # type: ignore[arg-type]
    with progress_bar("embedding", len(plan.to_embed), rate="img/s") as advance:
        report = apply_update(plan, batch_size, advance)
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
    for r in report.rejected[:20]:
        typer.echo(f"  rejected {r['path']}: {r['reason']}", err=True)
    if len(report.rejected) > 20:
        typer.echo(f"  ... and {len(report.rejected) - 20} more (see --json)", err=True)


@app.command("remove")
@user_errors
def remove_command(
    paths: Annotated[
        list[Path], typer.Argument(help="Indexed image files, or folders: every file under them.")
    ],
    index: IndexDirOpt = _DEFAULT_INDEX,
    as_json: JsonFlag = False,
) -> None:
    """Drop images from an index (the files themselves are left alone)."""
    from .engine import remove

    report = remove(index, paths)
    if not report.removed:
        raise UserError(f"{index}: none of the given paths is in the index")
    if as_json:
        print_json(report.to_dict())
        return
    typer.echo(f"{report.index}: removed {report.removed}, {report.count} left")
    for p in report.not_found:
        typer.echo(f"  not in the index: {p}", err=True)


def _query_paths(images: list[Path]) -> list[Path]:
    """Files as given; a folder stands for the image files in it (sorted, not recursive)."""
    from .image import is_image_path

    out: list[Path] = []
    for p in images:
        if p.is_dir():
            found = sorted(
                f
                for f in p.iterdir()
                if f.is_file() and not f.name.startswith(".") and is_image_path(f)
            )
            if not found:
                raise UserError(f"{p}: no image files in this folder")
            out.extend(found)
        elif not p.exists():
            raise UserError(f"{p}: no such file or folder")
        else:
            out.append(p)
    return out


@app.command("query")
@user_errors
def query_command(
    images: Annotated[list[Path], typer.Argument(help="Chromosome images, or folders of them.")],
    index: IndexDirOpt = _DEFAULT_INDEX,
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="Neighbours per image.")] = 8,
    model: Annotated[
        Path | None,
        typer.Option(
            "--model", help="Checkpoint to embed with (default: the one that built the index)."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per batch.")] = 64,
    as_json: JsonFlag = False,
) -> None:
    """Name chromosome images and list their k most similar indexed images.

    The name is the nearest class proxy (cosine score and margin to the runner-up; for the
    plain resnext network, the softmax probability), beside a vote of the k neighbours.
    """
    from .engine import SearchIndex

    paths = _query_paths(images)
    search = SearchIndex.open(index, model)
    results = search.query_images(paths, k, batch_size)
    if as_json:
        print_json({"results": [r.to_dict() for r in results]})
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for r in results:
        p = r.predicted
        head = f"[bold]{r.query}[/bold]"
        if p is not None:
            head += (
                f"  predicted [bold]{p.label}[/bold] ({p.kind} {p.score:.3f}, "
                f"margin {p.margin:.3f})"
            )
        head += f"  neighbours vote [bold]{r.knn_label or '-'}[/bold]"
        console.print(head)
        table = Table("rank", "score", "label", "cell", "id")
        table.add_column("path", overflow="fold")  # whole, so it can be opened
        for n in r.neighbours:
            table.add_row(
                str(n.rank), f"{n.score:.4f}", n.label or "-", n.cell_id or "-", str(n.id), n.path
            )
        console.print(table)


# -- karyotype (karyosearch.karyotype, karyosearch.karyogram) -------------------------------


def _karyotype_summary(console: Any, r: Any) -> None:
    """A readable account of one cell's karyotype (a `karyotype.CellKaryotype`)."""
    from .karyogram import ROWS

    colour = "bold" if r.normal else "bold red"
    line = f"{r.cell or 'cell'}: [{colour}]{r.karyotype}[/{colour}]  ({len(r.crops)} crops"
    if len(r.hypotheses) > 1:
        runner = r.hypotheses[1]
        line += f"; next {runner['karyotype']} at +{runner['cost'] - r.hypotheses[0]['cost']:.2f}"
    console.print(line + ")", highlight=False)
    if not r.complete:
        console.print("  incomplete cell: its crop count fits no karyotype; read with care")
    rows = ("  ".join(f"{n}:{r.counts[n]}" for n in row if n in r.counts) for row in ROWS)
    console.print("  counts  " + "  |  ".join(rows), highlight=False)
    if r.missing:
        console.print(f"  missing: {', '.join(r.missing)}", highlight=False)
    review = [c for c in r.crops if c.reasons]
    console.print(f"  review: {len(review)} crop(s)" + (":" if review else ""))
    for c in review:
        knn = f", neighbours say {c.knn_label}" if c.knn_label else ""
        called = "extra" if c.extra else c.label
        console.print(
            f"    {c.path}  {called} (p {c.confidence:.2f}, argmax {c.argmax}{knn}): "
            f"{', '.join(c.reasons)}",
            markup=False,
            highlight=False,
        )
    for s in r.skipped:
        console.print(f"  skipped {s['path']}: {s['reason']}", markup=False, highlight=False)


@app.command("karyotype")
@user_errors
def karyotype_command(
    cell_dir: Annotated[
        Path,
        typer.Argument(
            help="A folder of one cell's chromosome crops (searched recursively); with --batch, "
            "a folder of cell folders."
        ),
    ],
    model: Annotated[Path, typer.Option("--model", help="Encoder checkpoint (.pt).")],
    index: Annotated[
        Path | None,
        typer.Option(
            "--index",
            help="Index folder: list the most similar archived crops beside each crop to review.",
        ),
    ] = None,
    as_json: JsonFlag = False,
    png: Annotated[
        Path | None,
        typer.Option(
            "--png", help="Write a karyogram PNG here (with --batch: a folder, one per cell)."
        ),
    ] = None,
    params_file: Annotated[
        Path | None,
        typer.Option(
            "--params",
            help="Karyotype parameters JSON (default: <model>.karyotype.json beside the "
            "model if present, else built-in defaults).",
        ),
    ] = None,
    batch: Annotated[
        bool, typer.Option("--batch", help="CELL_DIR holds cell folders: karyotype each.")
    ] = False,
    k: Annotated[
        int, typer.Option("-k", "--k", min=1, help="Neighbours per crop to review (with --index).")
    ] = 4,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Karyotype a whole cell: name all its chromosomes at once and read the karyotype.

    Every crop is scored by the encoder; the crops are then assigned jointly to the slots of
    each karyotype (46,XX, 46,XY, 47,XX/XY,+n, 45,X, 47,XXY, 47,XXX, 47,XYY, 48,XXYY), a
    crop or two that were not cut out allowed, and the cheapest wins. Crops the assignment
    moved, crops with a low margin, crops whose size within the cell is unusual for their
    class (where the parameters hold a size model) and classes with an unexpected count are
    listed for review. Non-image files are reported and skipped.
    """
    from rich.console import Console

    from .karyotype import (
        attach_neighbours,
        collect_cell,
        find_cell_folders,
        karyotype_cell,
        karyotype_folder_of_cells,
        resolve_params,
    )
    from .model import load_encoder
    from .train import pick_device

    if not cell_dir.is_dir():
        raise UserError(
            f"{cell_dir}: no such folder"
            if not cell_dir.exists()
            else f"{cell_dir}: CELL_DIR must be a folder of chromosome crops"
        )
    if batch:
        folders = find_cell_folders(cell_dir)
        if not folders:
            raise UserError(f"{cell_dir}: no cell folders with chromosome images found")
        total = sum(len(collect_cell(f).images) for f in folders)
    else:
        files = collect_cell(cell_dir)
    params = resolve_params(model, params_file)
    encoder = load_encoder(model, pick_device(device))
    search = None
    if index is not None:
        from .engine import SearchIndex

        search = SearchIndex.open(index, encoder)
    if batch:
        with progress_bar("embedding crops", total, quiet=as_json) as advance:
            results = karyotype_folder_of_cells(
                encoder, cell_dir, params, progress=advance, folders=folders
            )
        cells = results.cells
    else:
        cells = [karyotype_cell(encoder, files.images, params, cell=str(cell_dir))]
        others = [{"path": str(p), "reason": "not an image file"} for p in files.others]
        cells[0].skipped = others + cells[0].skipped
    if search is not None:
        for r in cells:
            attach_neighbours(r, search, k)
    pngs: list[Path] = []
    if png is not None:
        from .karyogram import render_karyogram

        if batch:
            pngs = [
                render_karyogram(r, png / f"{Path(r.cell or 'cell').name}.karyogram.png")
                for r in cells
            ]
        else:
            pngs = [render_karyogram(cells[0], png)]
    if as_json:
        out = results.to_json() if batch else cells[0].to_json()
        if pngs:
            out["png"] = [str(p) for p in pngs] if batch else str(pngs[0])
        print_json(out)
        return
    console = Console()
    for r in cells:
        _karyotype_summary(console, r)
    if batch:
        calls = results.to_json()["karyotypes"]
        console.print(
            f"{len(cells)} cells: " + ", ".join(f"{n} {kt}" for kt, n in calls.items()),
            highlight=False,
        )
        for e in results.errors:
            console.print(f"  no karyotype for {e['cell']}: {e['reason']}", markup=False)
    if pngs:
        where = f"{png}/ ({len(pngs)} files)" if batch else str(pngs[0])
        console.print(f"karyogram: {where}", markup=False, highlight=False)


app.command("serve")(serve)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
