"""`karyosearch bench`: a checkpoint on its split's test part (accuracy, Recall@K)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import (
    DeviceOpt,
    LayoutOpt,
    need_output_file,
    need_path,
    print_json,
    progress_bar,
    user_errors,
)


@user_errors
def bench_command(
    data: Annotated[Path, typer.Option("--data", help="Labelled dataset folder or .csv manifest.")],
    model: Annotated[Path, typer.Option("--model", help="Checkpoint (.pt) to test.")],
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
    device: DeviceOpt = "auto",
    layout: LayoutOpt = "auto",
) -> None:
    """Test a checkpoint on its split's test part: accuracy, Recall@K, per-class accuracy.

    Reports accuracy, macro precision / recall / F1, Recall@1/2/4/8 (the share of test
    queries with a same-class image among their K nearest other test images; not the
    information-retrieval recall) and per-class accuracy. On gband612 the figures are also
    given without the three cells whose labels their own images contradict (`audited`).

    The split is rebuilt with the model's own split and seed; another split or seed of the
    dataset it trained on is refused, as its test images would include training images.
    """
    need_path(data)
    need_output_file(json_out)
    need_path(model, file=True, what="checkpoint file")
    from rich.console import Console
    from rich.table import Table

    from ..evaluation.bench import bench
    from ..util.atomic import write_json

    to_stdout = json_out is not None and str(json_out) == "-"
    with progress_bar("embedding test images", None) as advance:
        ev = bench(
            data,
            model,
            split,
            seed,
            batch_size,
            device,
            layout,
            figures_dir,
            progress=advance,  # type: ignore[arg-type]
        )
    r = ev.result
    for line in r["warnings"]:
        typer.echo(f"warning: {line}", err=True)
    if r["errors"]:
        typer.echo(
            f"warning: {len(r['errors'])} test image(s) unreadable and left out "
            f"(listed under 'errors' in the JSON)",
            err=True,
        )
    if r["rejected"]:
        typer.echo(
            f"warning: {len(r['rejected'])} dataset entr{'y' if len(r['rejected']) == 1 else 'ies'}"
            " rejected and in no split (listed under 'rejected' in the JSON):",
            err=True,
        )
        for rej in r["rejected"][:20]:
            typer.echo(f"  rejected {rej['path']}: {rej['reason']}", err=True)
        if len(r["rejected"]) > 20:
            typer.echo(f"  ... and {len(r['rejected']) - 20} more", err=True)
    console = Console(stderr=to_stdout)
    console.print(
        f"[bold]{model}[/bold]  {r['arch']}, {r['image_size']} px, fingerprint "
        f"{r['fingerprint']}; {r['split']} split, seed {r['seed']}: {r['n_test']} test "
        f"images of {r['dataset']['root']}"
    )
    audit = r.get("audited")  # the label-contradicted cells left out (data.rulings)
    columns = ["metric", "%"] + ([f"audited % ({audit['n_test']})"] if audit else [])
    table = Table(*columns, title="test set")
    for name, key in (
        ("accuracy", "accuracy"),
        ("precision (macro)", "precision"),
        ("recall (macro)", "recall"),
        ("F1 (macro)", "f1"),
    ):
        table.add_row(name, f"{100 * r[key]:.2f}", *([f"{100 * audit[key]:.2f}"] if audit else []))
    for k, v in r["recall_at_k"].items():
        extra = [f"{100 * audit['recall_at_k'][k]:.2f}"] if audit else []
        table.add_row(f"Recall@{k}", f"{100 * v:.2f}", *extra)
    console.print(table)
    if audit:
        console.print(
            f"audited: without the crops of {', '.join(audit['left_out_cells'])}, whose labels "
            "their own images contradict (the headline figures)"
        )
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
    for path in ev.figures:
        console.print(f"figure: {path}", soft_wrap=True, markup=False)
    if to_stdout:
        print_json(r)
    elif json_out is not None:
        write_json(json_out, r)
        console.print(f"result: {json_out}", soft_wrap=True, markup=False)
