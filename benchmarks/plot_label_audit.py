"""The cells a karyotype benchmark's label audit flagged, beside another cell of the same
patient: the crops of the classes at fault, all at one pixel scale, with their labels.

    .venv/bin/python benchmarks/plot_label_audit.py \\
        benchmarks/results/karyotype_gband612.s2-e14.json \\
        --out benchmarks/results/figures/label_audit_gband612.png

A label that is right looks like the same label in the patient's other cell; a shifted one
looks like the class before it (an X the size of a 22, a Y the size of an X).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from PIL import Image, ImageDraw

from karyosearch.data.datasets import Item, read_dataset
from karyosearch.labels import CLASS_NAMES

SCALE = 2  # source px -> figure px
ROW = 175  # figure px per row
LEFT = 260  # room for the row's caption


def involved_classes(flagged: dict) -> list[int]:
    """The labels at fault and the class on either side of each (a shift shows there)."""
    at_fault = {CLASS_NAMES.index(c["label"]) for c in flagged["crops"]}
    near = {k + d for k in at_fault for d in (-1, 0, 1)}
    return sorted(k for k in near if 0 <= k < len(CLASS_NAMES))


def crops_of(items: list[Item], classes: list[int]) -> list[Item]:
    return sorted((it for it in items if it.label in classes), key=lambda it: (it.label, it.path))


def draw_row(canvas: Image.Image, y: int, caption: str, items: list[Item]) -> None:
    draw = ImageDraw.Draw(canvas)
    draw.text((5, y + 5), caption, fill=0)
    x = LEFT
    for it in items:
        im = Image.open(it.path).convert("L")
        im = im.resize((im.width * SCALE, im.height * SCALE))
        if x + im.width > canvas.width:
            break
        canvas.paste(im.crop((0, 0, im.width, min(im.height, ROW - 16))), (x, y + 14))
        draw.text((x, y + 1), CLASS_NAMES[it.label], fill=0)
        x += im.width + 10


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("result", type=Path, help="a bench_karyotype.py JSON with a label_audit")
    ap.add_argument("--out", type=Path, required=True, help="PNG to write")
    ap.add_argument("--data", type=Path, help="the dataset (default: the JSON's)")
    ap.add_argument("--width", type=int, default=1400, help="figure width in px")
    args = ap.parse_args(argv)

    result = json.loads(args.result.read_text(encoding="utf-8"))
    flagged = result.get("label_audit", {}).get("flagged", [])
    if not flagged:
        raise SystemExit(f"error: {args.result} holds no flagged cells")
    dataset = read_dataset(args.data or result["data"])
    by_cell: dict[str, list[Item]] = defaultdict(list)
    cells_of_patient: dict[str, set[str]] = defaultdict(set)
    for it in dataset.items:
        by_cell[it.cell_id or ""].append(it)
        cells_of_patient[it.patient_id or ""].add(it.cell_id or "")

    rows: list[tuple[str, list[Item]]] = []
    for f in flagged:
        classes = involved_classes(f)
        items = by_cell[f["cell"]]
        patient = items[0].patient_id or ""
        names = ", ".join(f"{c['label']} {c['z']:+.0f} sd" for c in f["crops"])
        rows.append((f"{f['cell']}\nlabels say {f['true']}\n({names})", crops_of(items, classes)))
        others = sorted(cells_of_patient[patient] - {f["cell"]})
        if others:
            rows.append((f"{others[0]}\nsame patient", crops_of(by_cell[others[0]], classes)))

    canvas = Image.new("L", (args.width, ROW * len(rows)), 255)
    for r, (caption, items) in enumerate(rows):
        draw_row(canvas, r * ROW, caption, items)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.out)
    print(f"{len(flagged)} flagged cell(s) -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
