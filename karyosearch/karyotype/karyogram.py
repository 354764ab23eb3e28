"""Karyogram: a cell's chromosomes laid out by class, as a cytogeneticist reads them.

Rows follow the standard Denver groups: A (1-3) and B (4-5); C (6-12, X); D (13-15) and
E (16-18); F (19-20), G (21-22, Y) and any crops left over as debris. Homologues stand side by
side above their class label, bottom-aligned, all at one scale so relative lengths show.
Crops on the review list are outlined in red (a crop the assignment moved also shows its
independent label); a class with a missing chromosome or an unexpected count has a red label.
Crops are shown dark on light, as G-banded karyograms are printed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..data.image import ImageError, load
from .report import CellKaryotype, CropCall

ROWS: tuple[tuple[str, ...], ...] = (
    ("1", "2", "3", "4", "5"),
    ("6", "7", "8", "9", "10", "11", "12", "X"),
    ("13", "14", "15", "16", "17", "18"),
    ("19", "20", "21", "22", "Y", "extra"),
)
GROUPS: dict[str, str] = {
    "1": "A", "4": "B", "6": "C", "13": "D", "16": "E", "19": "F", "21": "G"
}  # fmt: skip
PAGE_WIDTH = 13.0  # in
MAX_CROP_HEIGHT = 1.5  # in; the tallest crop of the cell is drawn at most this tall
LABEL_HEIGHT = 0.42  # in, below each row of crops
CROP_GAP = 0.06  # in, between homologues
MARGIN = 0.3  # in
TITLE_HEIGHT = 0.8  # in


def display_image(bright: np.ndarray, invert: bool = True) -> np.ndarray:
    """A loaded crop (bright on a zero background) with its contrast stretched for display;
    dark on light when `invert`."""
    img = bright.astype(np.float32)
    content = img[img > 0]
    top = float(np.percentile(content, 99)) if content.size else 255.0
    img = np.clip(img * (230.0 / max(top, 1.0)), 0, 255)
    return (255.0 - img) if invert else img


def _load_images(
    crops: list[CropCall], images: Mapping[str, np.ndarray] | None
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for c in crops:
        if images is not None and c.path in images:
            out[c.path] = images[c.path]
            continue
        try:
            out[c.path] = load(c.path)
        except ImageError:
            out[c.path] = np.zeros((20, 8), np.uint8)
    return out


def render_karyogram(
    result: CellKaryotype,
    out: str | os.PathLike,
    images: Mapping[str, np.ndarray] | None = None,
    invert: bool = True,
    dpi: int = 150,
) -> Path:
    """Draw the karyogram of `result` to a PNG at `out` and return its path (`out`, with
    ".png" added when it has no suffix: the file really written).

    `images` maps crop paths to loaded crops (`image.load`); others are read from disk, and a
    crop that cannot be read is left blank.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    crops = _load_images(result.crops, images)
    by_class: dict[str, list[CropCall]] = {}
    for c in result.crops:
        by_class.setdefault("extra" if c.extra else c.label, []).append(c)
    missing = {name: result.missing.count(name) for name in set(result.missing)}
    odd = set(result.review_classes)

    usable = PAGE_WIDTH - 2 * MARGIN
    max_h = max((a.shape[0] for a in crops.values()), default=1)
    scale = MAX_CROP_HEIGHT / max_h  # in per px, one for the whole cell
    for row in ROWS:  # shrink until every class fits its share of the row
        slot = usable / len(row)
        for name in row:
            widths = [crops[c.path].shape[1] for c in by_class.get(name, [])]
            if widths:
                need = 0.9 * slot - CROP_GAP * (len(widths) - 1)
                scale = min(scale, max(need, 0.05) / sum(widths))
    row_h = [
        max([crops[c.path].shape[0] * scale for n in row for c in by_class.get(n, [])] + [0.3])
        for row in ROWS
    ]
    height = TITLE_HEIGHT + sum(h + LABEL_HEIGHT for h in row_h) + 2 * MARGIN + 0.2

    fig = Figure(figsize=(PAGE_WIDTH, height), facecolor="white")
    FigureCanvasAgg(fig)
    title = result.karyotype + ("" if result.complete else "  (incomplete cell)")
    fig.text(
        0.5,
        1 - (MARGIN + 0.3) / height,
        title,
        ha="center",
        va="center",
        fontsize=18,
        weight="bold",
        color="black" if result.normal else "darkred",
    )
    n_review = len(result.review)
    sub = f"{len(result.crops)} crops"
    if result.cell:
        sub = f"{Path(result.cell).name}: {sub}"
    if result.missing:
        sub += f"; missing: {', '.join(result.missing)}"
    n_extra = sum(c.extra for c in result.crops)
    if n_extra:
        sub += f"; {n_extra} extra"
    sub += f"; {n_review} to review (red outline)" if n_review else "; nothing to review"
    fig.text(
        0.5,
        1 - (MARGIN + 0.65) / height,
        sub,
        ha="center",
        va="center",
        fontsize=10,
        color="dimgray",
    )

    y_top = height - MARGIN - TITLE_HEIGHT
    for row, h in zip(ROWS, row_h, strict=True):
        baseline = y_top - h
        slot = usable / len(row)
        for k, name in enumerate(row):
            members = by_class.get(name, [])
            if name == "extra" and not members:
                continue
            cx = MARGIN + slot * (k + 0.5)
            widths = [crops[c.path].shape[1] * scale for c in members]
            x = cx - (sum(widths) + CROP_GAP * max(len(widths) - 1, 0)) / 2
            for c, w in zip(members, widths, strict=True):
                img = crops[c.path]
                ch = img.shape[0] * scale
                ax = fig.add_axes((x / PAGE_WIDTH, baseline / height, w / PAGE_WIDTH, ch / height))
                ax.imshow(
                    display_image(img, invert),
                    cmap="gray",
                    vmin=0,
                    vmax=255,
                    aspect="auto",
                    interpolation="nearest",
                )
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(bool(c.reasons))
                    spine.set_edgecolor("red")
                    spine.set_linewidth(1.6)
                if c.changed:
                    fig.text(
                        (x + w / 2) / PAGE_WIDTH,
                        (baseline + ch + 0.02) / height,
                        f"({c.argmax})",
                        ha="center",
                        va="bottom",
                        fontsize=7,
                        color="red",
                    )
                x += w + CROP_GAP
            if name == "extra":
                label, colour = "extra", "red"
            else:
                label = name
                if missing.get(name):
                    label += f" (-{missing[name]})"
                colour = "red" if name in odd else "black"
            fig.text(
                cx / PAGE_WIDTH,
                (baseline - 0.14) / height,
                label,
                ha="center",
                va="top",
                fontsize=11,
                color=colour,
            )
            fig.patches.append(
                Rectangle(
                    ((cx - 0.42 * slot) / PAGE_WIDTH, (baseline - 0.03) / height),
                    0.84 * slot / PAGE_WIDTH,
                    0.004,
                    transform=fig.transFigure,
                    color="black",
                    linewidth=0,
                )
            )
            if name in GROUPS:
                fig.text(
                    (cx - 0.48 * slot) / PAGE_WIDTH,
                    (y_top + 0.05) / height,
                    GROUPS[name],
                    ha="left",
                    va="top",
                    fontsize=9,
                    color="gray",
                    style="italic",
                )
        y_top = baseline - LABEL_HEIGHT
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out = Path(out)
    if not out.suffix:
        out = out.with_name(out.name + ".png")  # what savefig writes; say so
    fig.savefig(out, dpi=dpi, facecolor="white")
    return out
