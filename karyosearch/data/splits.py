"""Deterministic train / validation / test splits.

- `paper`: random over images, in the MIDL 2020 paper's proportions 4176 : 360 : 720.
  Homologues of one cell can fall on both sides, which flatters every number.
- `cell`: grouped by patient where known, else by cell, in about the same proportions;
  no group is on two sides.
- `karyo`: grouped by patient, every patient with an abnormal cell on the test side (for the
  whole-cell karyotyping evaluation; see `abnormal_patient_split`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from ..cytogenetics import is_normal, true_karyotype

if TYPE_CHECKING:
    from .datasets import Dataset

SplitName = Literal["paper", "cell", "karyo"]
SPLITS: tuple[str, ...] = ("paper", "cell", "karyo")
PAPER_PROPORTIONS = (4176, 360, 720)  # train, val, test images in the paper (5,256 in all)


@dataclass(frozen=True)
class Split:
    """Index arrays into a dataset's items, disjoint, covering every item once."""

    name: str
    seed: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    @classmethod
    def from_sides(cls, name: str, seed: int, sides: np.ndarray) -> Split:
        """A split from each item's side: 0 train, 1 val, 2 test."""
        sides = np.asarray(sides)
        return cls(name, seed, *(np.flatnonzero(sides == s) for s in (0, 1, 2)))

    def part(self, name: str) -> np.ndarray:
        if name not in ("train", "val", "test"):
            raise ValueError(f"no split part {name!r}: choose train, val or test")
        return getattr(self, name)


def _sizes(n: int) -> tuple[int, int]:
    total = sum(PAPER_PROPORTIONS)
    n_val = round(n * PAPER_PROPORTIONS[1] / total)
    n_test = round(n * PAPER_PROPORTIONS[2] / total)
    return n_val, n_test


def paper_split(n: int, seed: int) -> Split:
    """Random image-level split of n items in the paper's proportions."""
    order = np.random.default_rng(seed).permutation(n)
    n_val, n_test = _sizes(n)
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    return Split("paper", seed, np.sort(train), np.sort(val), np.sort(test))


def group_split(groups: Sequence[str], seed: int) -> Split:
    """Split whole groups (patients or cells), filling test then val to the paper's shares."""
    groups = np.asarray(groups, dtype=object)
    names, inverse = np.unique(groups.astype(str), return_inverse=True)
    sizes = np.bincount(inverse, minlength=len(names))
    order = np.random.default_rng(seed).permutation(len(names))
    n_val, n_test = _sizes(len(groups))
    side = np.zeros(len(names), dtype=np.int8)  # 0 train, 1 val, 2 test
    # Fill test, then val, group by group; a part takes the next group only while that brings
    # its size closer to the target (so parts land within half a group of their targets).
    part, targets, filled = 2, {2: n_test, 1: n_val}, {2: 0, 1: 0}
    for g in order:
        while part and filled[part] + sizes[g] - targets[part] > targets[part] - filled[part]:
            part -= 1  # this part is as full as it gets; move on to the next
        if part:
            side[g] = part
            filled[part] += sizes[g]
    return Split.from_sides("cell", seed, side[inverse])


def make_split(name: str, groups: Sequence[str], seed: int) -> Split:
    """The named split over items whose groups (patient, else cell) are given."""
    if name == "paper":
        return paper_split(len(groups), seed)
    if name == "cell":
        return group_split(groups, seed)
    raise ValueError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")


def split_dataset(dataset: Dataset, name: str, seed: int) -> Split:
    """The named split of a dataset: the one entry point for training and evaluation."""
    if name == "karyo":
        return abnormal_patient_split(dataset, seed)
    return make_split(name, dataset.groups(), seed)


def cell_karyotypes(dataset: Dataset) -> dict[str, str | None]:
    """True karyotype (see `true_karyotype`) of every cell of a labelled dataset."""
    by_cell: dict[str, list[int]] = {}
    for it in dataset.items:
        by_cell.setdefault(it.cell_id or it.path, []).append(it.label)
    return {cell: true_karyotype(labels) for cell, labels in by_cell.items()}


def abnormal_patient_split(
    dataset: Dataset, seed: int = 0, test_share: float = 0.15, val_share: float = 0.07
) -> Split:
    """The `karyo` split: every patient with an abnormal cell is on the test side.

    Groups are patients (else cells). A patient is abnormal when any of its cells has a
    readable karyotype (`true_karyotype`) other than 46,XX / 46,XY. All abnormal patients go
    to test; of the other patients, in a seeded random order, `test_share` go to test too,
    then `val_share` to validation, and the rest to training. No patient straddles two sides,
    so an encoder trained on `train` never saw a test patient.
    """
    karyos = cell_karyotypes(dataset)
    groups = np.asarray(dataset.groups(), dtype=object).astype(str)
    cells = [it.cell_id or it.path for it in dataset.items]
    abnormal = {
        g
        for g, c in zip(groups, cells, strict=True)
        if karyos[c] is not None and not is_normal(karyos[c])
    }
    others = sorted(set(groups) - abnormal)
    order = [others[i] for i in np.random.default_rng(seed).permutation(len(others))]
    n_test = round(test_share * len(others))
    n_val = round(val_share * len(others))
    side = {g: 2 for g in abnormal}
    side.update({g: 2 for g in order[:n_test]})
    side.update({g: 1 for g in order[n_test : n_test + n_val]})
    side.update({g: 0 for g in order[n_test + n_val :]})
    return Split.from_sides("karyo", seed, np.array([side[g] for g in groups], dtype=np.int8))
