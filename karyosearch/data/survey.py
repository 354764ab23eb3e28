"""What a dataset holds, read image by image: the report of `karyosearch data inspect`.

`survey` loads every image (so unreadable ones are found before training), counts classes,
cells and patients, measures crop sizes and polarity, and audits the labels by the crops'
sizes within their cells (`audit_labels`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..labels import CLASS_NAMES
from ..sizes import MIN_CROPS_FOR_SIZE, contradicted_crops, fit_size_model, relative_sizes
from .datasets import Dataset, Item, Rejected
from .image import ImageError, crop_chromosome, detect_polarity, foreground_area, read_grey


def survey(dataset: Dataset, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Read every image of a dataset and summarise it (the report of `data inspect`).

    Images that fail to load join the rejected list with the reason; `images` counts those
    that load. Keys `layout, images, cells, patients, classes, rejected` are a stable contract.
    `label_audit` lists the cells whose labels their crops' sizes contradict (`audit_labels`).
    """

    def look(item: Item) -> tuple[Item, tuple[int, int] | None, str | None, str | None, int]:
        try:
            grey = read_grey(item.path)
            crop = crop_chromosome(grey, "auto", item.path)
            return item, crop.shape, detect_polarity(grey), None, foreground_area(crop)
        except ImageError as err:
            return item, None, None, err.reason, 0

    good: list[Item] = []
    shapes: list[tuple[int, int]] = []
    areas: list[int] = []
    polarity: dict[str, int] = {"bright": 0, "dark": 0}
    rejected = list(dataset.rejected)
    with ThreadPoolExecutor(max_workers=2) as pool:
        looks = pool.map(look, dataset.items, chunksize=64)
        for i, (item, shape, pol, reason, area) in enumerate(looks):
            if reason is None:
                good.append(item)
                shapes.append(shape)
                areas.append(area)
                polarity[pol] += 1
            else:
                rejected.append(Rejected(item.path, reason))
            if progress is not None and i % 256 == 255:
                progress(256)
    counts = np.bincount([it.label for it in good], minlength=len(CLASS_NAMES))
    hw = np.asarray(shapes, dtype=float).reshape(-1, 2)

    def stats(values: np.ndarray) -> dict[str, float]:
        if not len(values):
            return {}
        q = np.percentile(values, [0, 50, 100])
        return {"min": float(q[0]), "median": float(q[1]), "max": float(q[2])}

    return {
        "root": str(dataset.root),
        "layout": dataset.layout,
        "images": len(good),
        "cells": len({it.cell_id for it in good if it.cell_id is not None}),
        "patients": len({it.patient_id for it in good if it.patient_id is not None}),
        "classes": {name: int(n) for name, n in zip(CLASS_NAMES, counts, strict=True)},
        "crop_height": stats(hw[:, 0]),
        "crop_width": stats(hw[:, 1]),
        "polarity": polarity,
        "rejected": [{"path": r.path, "reason": r.reason} for r in rejected],
        "label_audit": audit_labels(good, areas),
    }


def audit_labels(items: Sequence[Item], areas: Sequence[float]) -> list[dict[str, Any]]:
    """Cells whose labels their crops' sizes contradict: a crop more than
    `sizes.LABEL_AUDIT_Z` sd from its labelled class's size relative to its cell (labels
    shifted by a class, a fragment labelled as a chromosome). The class sizes are robust ones
    (median, MAD) over all the cells of at least `sizes.MIN_CROPS_FOR_SIZE` crops, the
    audited ones included; [] without such cells."""
    rows: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        if it.cell_id is not None:
            rows.setdefault(it.cell_id, []).append(i)
    cells = {c: r for c, r in rows.items() if len(r) >= MIN_CROPS_FOR_SIZE}
    if not cells:
        return []
    area = np.asarray(areas, dtype=float)
    labels = np.asarray([it.label for it in items])
    sizes = {c: relative_sizes(area[r]) for c, r in cells.items()}
    mean, sd = fit_size_model(
        list(sizes.values()), [labels[r] for r in cells.values()], robust=True
    )
    out = []
    for c, r in cells.items():
        paths = [items[i].path for i in r]
        if crops := contradicted_crops(sizes[c], labels[r], paths, mean, sd):
            out.append({"cell": c, "crops": crops})
    return out
