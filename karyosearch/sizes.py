"""Relative size within the cell: how long a chromosome is beside the other crops of its cell.

The encoder sees every crop filling its frame, so it cannot tell a long chromosome from a
short one; within one metaphase it can be told. A crop's relative size is log(area) - median
log(area) of its cell (`relative_sizes`, free of the cell's condensation and the scanner's
scale); a Gaussian per class, fitted on training cells (`fit_size_model`), gives
log p(size | class) (`size_log_likelihood`). The same model audits labels: a crop far from its
labelled class's size contradicts its label (`contradicted_crops`), and a crop far from every
class's is debris (`debris_crops`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .labels import CLASS_NAMES, NUM_CLASSES

MIN_SIZE_SD = 0.02  # floor of a class's spread of relative log size (a class seen in few cells)
# Fewer crops than this are too few for their median to stand for the cell's size scale.
MIN_CROPS_FOR_SIZE = 30


def relative_sizes(areas: Sequence[float] | np.ndarray) -> np.ndarray:
    """log(area) - median(log area) over the crops of one cell: each crop's size relative to
    its cell's, free of how condensed the metaphase was and of the scanner's scale."""
    logs = np.log(np.maximum(np.asarray(areas, dtype=np.float64), 1.0))
    return logs - np.median(logs) if len(logs) else logs


def fit_size_model(
    sizes: Sequence[np.ndarray], labels: Sequence[np.ndarray], robust: bool = False
) -> tuple[list[float], list[float]]:
    """Mean and standard deviation of relative size per class over training cells (each
    cell's `relative_sizes` and true labels); a class with no crop gets mean 0, sd 1.
    `robust`: median and 1.4826 x median absolute deviation instead, which a few mislabelled
    crops do not move (to audit the labels they are fitted on)."""
    s, y = np.concatenate(list(sizes)), np.concatenate(list(labels)).astype(int)
    mean, sd = np.zeros(NUM_CLASSES), np.ones(NUM_CLASSES)
    for c in range(NUM_CLASSES):
        v = s[y == c]
        if len(v) < 2:
            continue
        if robust:
            mean[c] = np.median(v)
            sd[c] = max(1.4826 * float(np.median(np.abs(v - mean[c]))), MIN_SIZE_SD)
        else:
            mean[c], sd[c] = v.mean(), max(v.std(), MIN_SIZE_SD)
    return mean.round(5).tolist(), sd.round(5).tolist()


def size_z(sizes: np.ndarray, mean: Sequence[float], sd: Sequence[float]) -> np.ndarray:
    """How far each crop's relative size is from each class's, in sd: shape (N, classes)."""
    return (np.asarray(sizes, float)[:, None] - np.asarray(mean, float)) / np.asarray(sd, float)


# A crop this many sd from its labelled class's relative size cannot be that class: its
# cell's labels contradict the images (labels shifted by one class, a fragment labelled as a
# chromosome). On gband612 any bound from 9 to 17 sd finds the same three cells.
LABEL_AUDIT_Z = 10.0
# A crop this many sd from every class's relative size is no chromosome (a speck, a stain
# blot, a sliver cut off another chromosome): it is left out of the assignment as debris,
# whatever its scores say. No crop of any of gband612's 612 cells but one (a speck of a few
# pixels, 24-25 sd from its nearest class) is more than 5.0 sd from every class.
DEBRIS_Z = LABEL_AUDIT_Z


def debris_crops(z: np.ndarray) -> np.ndarray:
    """Mask of a cell's crops more than DEBRIS_Z sd from every class's relative size, from
    their `size_z` (N, classes)."""
    return np.abs(z).min(axis=1) > DEBRIS_Z


def labels_contradicted(
    sizes: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    mean: Sequence[float],
    sd: Sequence[float],
    max_z: float = LABEL_AUDIT_Z,
) -> np.ndarray:
    """Rows of one cell's crops whose relative size is more than `max_z` sd from their
    labelled class's (a label audit from sizes alone: no encoder involved)."""
    labels = np.asarray(labels, int)
    z = size_z(sizes, mean, sd)[np.arange(len(labels)), labels]
    return np.flatnonzero(np.abs(z) > max_z)


def contradicted_crops(
    sizes: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    paths: Sequence[str],
    mean: Sequence[float],
    sd: Sequence[float],
) -> list[dict[str, Any]]:
    """`labels_contradicted` as records, for a report: each crop at fault with its path, its
    label and how far its size is from its label's, in sd ([] for a cell whose labels hold)."""
    labels = np.asarray(labels, int)
    rows = labels_contradicted(sizes, labels, mean, sd)
    if not len(rows):
        return []
    z = size_z(sizes, mean, sd)
    return [
        {
            "path": str(paths[i]),
            "label": CLASS_NAMES[labels[i]],
            "z": round(float(z[i, labels[i]]), 2),
        }
        for i in rows
    ]


def size_log_likelihood(
    sizes: np.ndarray, mean: Sequence[float], sd: Sequence[float]
) -> np.ndarray:
    """log N(size; mean_c, sd_c) per crop and class, up to a constant: shape (N, classes)."""
    return -0.5 * size_z(sizes, mean, sd) ** 2 - np.log(np.asarray(sd, float))
