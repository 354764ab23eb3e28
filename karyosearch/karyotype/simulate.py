"""Labelled cells and abnormal cells simulated from normal ones (to fit the penalties on).

Per normal cell: itself and a copy missing one random autosome crop (normal); a trisomy and a
gain of X or Y (a crop of that class from another cell added); 45,X (the Y, or one X,
removed). Missing crops are simulated from autosomes only, as in the G-band set, where every
45-crop normal cell misses an autosome.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..cytogenetics import N_AUTOSOMES, X, Y, hypothesis_named, is_normal, iscn, normal_counts
from ..labels import CLASS_NAMES, NUM_CLASSES
from .assign import crop_similarity


@dataclass
class LabelledCell:
    """Class scores of one cell's crops with their true labels and true karyotype."""

    scores: np.ndarray  # (N, classes) encoder scores (not yet divided by T)
    labels: np.ndarray  # (N,) true class index per crop
    karyotype: str  # true ISCN karyotype
    cell_id: str = ""
    embeddings: np.ndarray | None = None  # (N, D) unit embeddings, for homologue likeness
    sizes: np.ndarray | None = None  # (N,) relative sizes within the crop's own source cell

    def without(self, row: int, karyotype: str | None, tag: str) -> LabelledCell:
        """The cell with crop `row` removed (`karyotype` None: the same karyotype)."""
        keep = np.ones(len(self.labels), bool)
        keep[row] = False
        return LabelledCell(
            self.scores[keep],
            self.labels[keep],
            self.karyotype if karyotype is None else karyotype,
            self.cell_id + tag,
            None if self.embeddings is None else self.embeddings[keep],
            None if self.sizes is None else self.sizes[keep],
        )

    def plus(self, donor: LabelledCell, row: int, karyotype: str, tag: str) -> LabelledCell:
        """The cell with crop `row` of `donor` added."""
        return LabelledCell(
            np.vstack([self.scores, donor.scores[row][None]]),
            np.append(self.labels, donor.labels[row]),
            karyotype,
            self.cell_id + tag,
            None
            if self.embeddings is None or donor.embeddings is None
            else np.vstack([self.embeddings, donor.embeddings[row][None]]),
            # the donor crop keeps its size relative to its own cell, as a crop of this cell
            # would have it relative to this one
            None
            if self.sizes is None or donor.sizes is None
            else np.append(self.sizes, donor.sizes[row]),
        )

    @cached_property
    def similarity(self) -> np.ndarray | None:
        """crop_similarity of the embeddings (None without), computed once."""
        return None if self.embeddings is None else crop_similarity(self.embeddings)


def simulate_cells(
    normal: Sequence[LabelledCell], seed: int = 0, missing_share: float = 0.2
) -> tuple[list[LabelledCell], list[LabelledCell]]:
    """Normal and abnormal cells made from normal (training) cells, by moving crop rows.

    Per normal cell: itself and a copy missing one random autosome crop (normal); a trisomy
    of a random autosome and a gain of X or Y (a crop of that class from another cell added);
    45,X (the Y, or one X, removed). A `missing_share` of the abnormal ones also miss one
    random autosome crop (not of the gained class), as some real abnormal cells do.
    """
    rng = np.random.default_rng(seed)
    base = [c for c in normal if is_normal(c.karyotype)]
    by_class: dict[int, list[tuple[int, int]]] = {}
    for ci, c in enumerate(base):
        for ri, lab in enumerate(c.labels):
            by_class.setdefault(int(lab), []).append((ci, ri))

    def donor(cls: int, not_cell: int) -> tuple[int, int] | None:
        pool = [p for p in by_class.get(cls, []) if p[0] != not_cell]
        return pool[rng.integers(len(pool))] if pool else None

    def random_autosome_row(c: LabelledCell, labels: np.ndarray, avoid: int = -1) -> int | None:
        rows = np.flatnonzero((labels < N_AUTOSOMES) & (labels != avoid))
        return int(rows[rng.integers(len(rows))]) if len(rows) else None

    normals: list[LabelledCell] = []
    abnormals: list[LabelledCell] = []
    for ci, c in enumerate(base):
        counts = np.asarray(hypothesis_named(c.karyotype).counts)
        normals.append(c)
        r = random_autosome_row(c, c.labels)
        if r is not None:
            normals.append(c.without(r, None, "-miss"))
        sims: list[LabelledCell] = []
        n = int(rng.integers(N_AUTOSOMES))
        found = donor(n, ci)
        if found is not None:
            gained = iscn(counts + np.eye(NUM_CLASSES, dtype=int)[n])
            sims.append(c.plus(base[found[0]], found[1], gained, f"+{n + 1}"))
        gain = X if rng.random() < 0.5 else Y
        found = donor(gain, ci)
        if found is not None:
            gained = iscn(counts + np.eye(NUM_CLASSES, dtype=int)[gain])
            sims.append(c.plus(base[found[0]], found[1], gained, f"+{CLASS_NAMES[gain]}"))
        lose = Y if counts[Y] else X
        rows = np.flatnonzero(c.labels == lose)
        if len(rows):
            sims.append(c.without(int(rows[0]), iscn(normal_counts("X")), f"-{CLASS_NAMES[lose]}"))
        for s in sims:
            if rng.random() < missing_share:
                gained = [k for k in range(N_AUTOSOMES) if Counter(s.labels.tolist())[k] > 2]
                r = random_autosome_row(s, s.labels, gained[0] if gained else -1)
                if r is not None:
                    s = s.without(r, None, "-miss")
            abnormals.append(s)
    return normals, abnormals
