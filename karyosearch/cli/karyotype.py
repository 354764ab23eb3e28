"""`karyosearch karyotype CELL_DIR` (a whole cell's karyotype) and `karyosearch karyotype fit`
(the parameters it applies, fitted on a labelled dataset)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from .common import (
    DeviceOpt,
    JsonFlag,
    LayoutOpt,
    bars,
    close_bars,
    need_path,
    print_json,
    user_errors,
)


class CellByDefault(TyperGroup):
    """`karyotype CELL_DIR ...` runs the `cell` command; `karyotype fit ...` the fit."""

    default_command = "cell"

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return ["[cell] CELL_DIR [OPTIONS]  |  fit --data PATH --model CKPT [OPTIONS]"]


karyotype_app = typer.Typer(
    cls=CellByDefault,
    no_args_is_help=True,
    help="Karyotype whole cells: `karyosearch karyotype CELL_DIR` names all chromosomes of a "
    "cell at once and reads its karyotype (the `cell` command, the default); "
    "`karyosearch karyotype fit` fits the parameters it applies on a labelled dataset.",
)


def _karyotype_summary(console: Any, r: Any) -> None:
    """A readable account of one cell's karyotype (a `karyotype.report.CellKaryotype`)."""
    from ..karyotype.karyogram import ROWS

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


@karyotype_app.command("cell")
@user_errors
def karyotype_command(
    cell_dir: Annotated[
        Path,
        typer.Argument(
            help="A folder of one cell's chromosome crops (searched recursively); with --batch, "
            "a folder of cell folders."
        ),
    ],
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            help="Encoder checkpoint (.pt) (default: the shipped encoder for the crops' stain, "
            "Q- or G-band, from models/).",
        ),
    ] = None,
    index: Annotated[
        Path | None,
        typer.Option(
            "--index",
            help="Index folder of labelled crops (same encoder): each crop's call also weighs "
            "its nearest archived crops, and the crops to review list them beside it.",
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
            help="Karyotype parameters JSON (default: `<model>.karyotype.json` beside the "
            "model if present, else built-in defaults).",
        ),
    ] = None,
    batch: Annotated[
        bool, typer.Option("--batch", help="CELL_DIR holds cell folders: karyotype each.")
    ] = False,
    k: Annotated[
        int, typer.Option("-k", "--k", min=1, help="Neighbours per crop to review (with --index).")
    ] = 4,
    device: DeviceOpt = "auto",
) -> None:
    """Karyotype a whole cell: name all its chromosomes at once and read the karyotype.

    Every crop is scored by the encoder; the crops are then assigned jointly to the slots of
    each karyotype (46,XX, 46,XY, 47,XX/XY,+n, 45,X, 47,XXY, 47,XXX, 47,XYY, 48,XXYY), a
    crop or two that were not cut out allowed, and the cheapest wins. Crops the assignment
    moved, crops with a low margin, crops whose size within the cell is unusual for their
    class (where the parameters hold a size model) and classes with an unexpected count are
    listed for review. Non-image files are reported and skipped. Fewer than 20 readable
    crops are no cell: refused with an error line (exit 1), not read as a karyotype.
    """
    from rich.console import Console

    from ..karyotype.cells import run_karyotype

    try:
        run = run_karyotype(
            cell_dir, model, params_file, batch, index, k, png, device, None if as_json else bars
        )
    finally:
        close_bars()
    if run.model_note:
        typer.echo(run.model_note, err=True)
    if as_json:
        print_json(run.to_json())
        return
    cells, pngs = run.cells, run.pngs
    console = Console()
    for r in cells:
        _karyotype_summary(console, r)
    if run.batch is not None:
        calls = run.batch.to_json()["karyotypes"]
        console.print(
            f"{len(cells)} cells: " + ", ".join(f"{n} {kt}" for kt, n in calls.items()),
            highlight=False,
        )
        for e in run.batch.errors:
            console.print(f"  no karyotype for {e['cell']}: {e['reason']}", markup=False)
    if pngs:
        where = f"{png}/ ({len(pngs)} files)" if batch else str(pngs[0])
        console.print(f"karyogram: {where}", markup=False, highlight=False)


@karyotype_app.command("fit")
@user_errors
def fit_command(
    data: Annotated[
        Path,
        typer.Option("--data", help="Labelled dataset folder of whole cells."),
    ],
    model: Annotated[Path, typer.Option("--model", help="Encoder checkpoint (.pt).")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Where to write the parameters (default <model>.karyotype.json)."
        ),
    ] = None,
    split: Annotated[
        str, typer.Option("--split", help="auto (cell for BioImLab, else karyo), karyo or cell.")
    ] = "auto",
    seed: Annotated[
        int | None, typer.Option("--seed", help="Split seed (default: the model's training seed).")
    ] = None,
    max_fpr: Annotated[
        float, typer.Option("--max-fpr", help="False-positive bound of the penalty fit.")
    ] = 0.01,
    no_size: Annotated[
        bool, typer.Option("--no-size", help="Leave the crops' sizes within their cells out.")
    ] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per batch.")] = 128,
    device: DeviceOpt = "auto",
    layout: LayoutOpt = "auto",
    as_json: JsonFlag = False,
) -> None:
    """Fit the karyotype parameters of an encoder on a labelled dataset of whole cells.

    The temperature and the size model on the split's validation and training cells, the
    penalties of abnormal karyotypes on abnormalities simulated from normal training cells
    (false-positive rate at most --max-fpr); never on test cells. The file records the
    encoder's fingerprint: `karyosearch karyotype` refuses it beside another model.
    """
    need_path(data)
    need_path(model, file=True, what="checkpoint file")
    from ..karyotype.fit import fit_params_file

    try:
        fit, path = fit_params_file(
            data,
            model,
            out,
            device,
            layout,  # type: ignore[arg-type]
            progress=None if as_json else bars("embedding crops", None),
            split=split,
            seed=seed,
            max_fpr=max_fpr,
            use_size=not no_size,
            batch_size=batch_size,
        )
    finally:
        close_bars()
    for line in fit.warnings:
        typer.echo(f"warning: {line}", err=True)
    p = fit.params
    if as_json:
        print_json({"params_file": str(path), "params": p.to_json()})
        return
    typer.echo(
        f"{fit.split} split, seed {fit.seed}: T = {fit.temperature:.4g}, size weight "
        f"{p.size_weight:.3g}, penalties {p.penalties}, debris cost {p.extra_cost:g}, "
        f"homologue weight {p.homologue_weight:g} -> {path}"
    )
