"""`karyosearch train`: train an encoder and keep the best validation checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import (
    JsonFlag,
    LayoutOpt,
    bars,
    close_bars,
    fail,
    need_output_file,
    need_path,
    print_json,
    user_errors,
)


@user_errors
def train_command(
    data: Annotated[Path, typer.Option("--data", help="Labelled dataset folder or .csv manifest.")],
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
            help="Start from this checkpoint's weights instead of at random (transfer, e.g. "
            "from a G-band encoder to Q-band): the same network and stem, at any input size; "
            "refused if its training saw this split's test images.",
        ),
    ] = None,
    also: Annotated[
        Path | None,
        typer.Option(
            "--also",
            help="Train jointly on a second labelled dataset (another stain): its training "
            "part fills a share of every batch (recipe field also_share, default 0.5; an "
            "epoch grows to still show each --data image once); validation and the "
            "checkpoint choice stay on --data.",
        ),
    ] = None,
    also_split: Annotated[
        str | None,
        typer.Option("--also-split", help="The --also dataset's split (default: --split)."),
    ] = None,
    also_seed: Annotated[
        int | None,
        typer.Option("--also-seed", help="The --also dataset's split seed (default: --seed)."),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Change one field of the preset's recipe, KEY=VALUE (a Python literal), e.g. "
            "--set rotate=30.0 --set 'scale=(0.8,1.2)' --set canvas_percentile=95.0. "
            "Repeatable; fields: see karyosearch.train.recipe.Recipe.",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Train an encoder (from scratch, or from --init) and keep the best validation checkpoint.

    The split is made from --seed; the test part is never seen. Each epoch prints wall time,
    training loss, validation loss and accuracy; OUT.last allows --resume after a stop.
    """
    need_path(data)
    need_output_file(out)
    need_path(init, file=True, what="checkpoint file")
    need_path(also)
    from ..data.splits import SPLITS
    from ..model.encoder import ARCHS
    from ..train.loop import train
    from ..train.recipe import TrainOptions, parse_overrides

    if arch not in ARCHS:
        raise fail(f"unknown --arch {arch!r}: choose {', '.join(ARCHS)}")
    if split not in SPLITS:
        raise fail(f"unknown --split {split!r}: choose {', '.join(SPLITS)}")
    if also_split is not None and also_split not in SPLITS:
        raise fail(f"unknown --also-split {also_split!r}: choose {', '.join(SPLITS)}")
    if also is None and (also_split is not None or also_seed is not None):
        raise fail("--also-split and --also-seed need --also")

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
        also=str(also) if also is not None else None,
        also_split=also_split,
        also_seed=also_seed,
        overrides=parse_overrides(overrides or []),
    )
    try:
        record = train(opts, log=lambda line: typer.echo(line, err=as_json), progress=bars)
    finally:
        close_bars()
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


@user_errors
def export_command(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint written by `train` (.pt).")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the exported model (.pt).")],
    full: Annotated[
        bool, typer.Option("--full", help="Keep float32 weights (default: float16, half the size).")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Export a trained checkpoint for distribution: no optimiser state, float16 weights.

    The weights are rounded to float16 before the fingerprint is taken, so the exported model
    is a model of its own (an index built with the float32 original refuses it). This is how
    the encoders in models/ were made; their cards are in models/README.md.
    """
    from ..model.checkpoint import export_checkpoint

    if not checkpoint.is_file():
        raise fail(f"{checkpoint}: no such file")
    if out.is_dir():
        raise fail(f"{out}: is a folder; give the file to write (.pt)")
    exported = export_checkpoint(checkpoint, out, half=not full)
    info = {"checkpoint": str(out), "fingerprint": exported.fingerprint, "float16": not full}
    if as_json:
        print_json(info)
    else:
        typer.echo(
            f"{out}: fingerprint {exported.fingerprint} ({'float32' if full else 'float16'})"
        )
