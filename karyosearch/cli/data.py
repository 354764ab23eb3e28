"""`karyosearch data inspect`: what a dataset folder holds, and what was rejected."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import (
    ExistingPath,
    JsonFlag,
    LayoutOpt,
    need_path,
    print_json,
    progress_bar,
    user_errors,
)

data_app = typer.Typer(help="Look at datasets before training or indexing.", no_args_is_help=True)


@data_app.command("inspect")
@user_errors
def data_inspect(path: ExistingPath, layout: LayoutOpt = "auto", as_json: JsonFlag = False) -> None:
    """What a dataset folder holds: layout, images, cells, patients, per-class counts, crop
    sizes, polarity (Q-band bright-on-dark or G-band dark-on-light) and rejected files.

    Cells whose labels their crops' sizes contradict are listed too: a crop more than 10 sd
    from its labelled class's size relative to its cell (labels shifted by a class, a
    fragment labelled as a chromosome)."""
    need_path(path)
    from ..data.datasets import read_dataset
    from ..data.survey import survey

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
