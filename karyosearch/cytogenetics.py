"""Karyotypes as cytogeneticists write them: ISCN strings and the hypotheses a cell may have.

- `iscn` writes per-class counts as an ISCN-style karyotype ("47,XY,+21", "45,X").
- `hypotheses`: 46,XX and 46,XY; 47,XX,+n and 47,XY,+n for every autosome n; 45,X; 47,XXY;
  47,XXX; 47,XYY; 48,XXYY. Each is an expected count per class, i.e. a set of slots.
- `true_karyotype` reads a labelled cell's karyotype from its crop labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .labels import CLASS_NAMES, NUM_CLASSES

X = CLASS_NAMES.index("X")
Y = CLASS_NAMES.index("Y")
N_AUTOSOMES = 22
KINDS: tuple[str, ...] = ("normal", "trisomy", "sex_gain", "monosomy_x")
PENALIZED_KINDS: tuple[str, ...] = KINDS[1:]
NORMAL_KARYOTYPES: tuple[str, ...] = ("46,XX", "46,XY")


def iscn(counts: Sequence[int] | np.ndarray) -> str:
    """ISCN-style karyotype of per-class counts (24 values): "47,XY,+21", "45,X", "47,XXY".

    Sex chromosomes are written out; autosomal gains and losses as +n / -n.
    """
    counts = np.asarray(counts, dtype=int)
    parts = [str(int(counts.sum())), "X" * counts[X] + "Y" * counts[Y] or "--"]
    for i in range(N_AUTOSOMES):
        delta = int(counts[i]) - 2
        parts += [f"+{i + 1}"] * max(delta, 0) + [f"-{i + 1}"] * max(-delta, 0)
    return ",".join(parts)


def normal_counts(sex: str) -> np.ndarray:
    """Expected crops per class of a karyotype with two of each autosome and `sex` ("XY")."""
    counts = np.full(NUM_CLASSES, 2, dtype=int)
    counts[X], counts[Y] = sex.count("X"), sex.count("Y")
    return counts


@dataclass(frozen=True)
class Hypothesis:
    """One karyotype the cell may have: its ISCN name, slots per class and kind."""

    name: str  # ISCN string, e.g. "47,XY,+21"
    counts: tuple[int, ...]  # expected chromosomes per class index 0..23
    kind: str  # one of KINDS

    @property
    def n_slots(self) -> int:
        return sum(self.counts)


@lru_cache(maxsize=2)
def hypotheses(include_xxyy: bool = True) -> tuple[Hypothesis, ...]:
    """The karyotypes considered, normal ones first (they win ties)."""

    def make(counts: np.ndarray, kind: str) -> Hypothesis:
        return Hypothesis(iscn(counts), tuple(int(c) for c in counts), kind)

    out = [make(normal_counts(sex), "normal") for sex in ("XX", "XY")]
    for sex in ("XX", "XY"):
        for n in range(N_AUTOSOMES):
            counts = normal_counts(sex)
            counts[n] += 1
            out.append(make(counts, "trisomy"))
    for sex in ("XXY", "XXX", "XYY") + (("XXYY",) if include_xxyy else ()):
        out.append(make(normal_counts(sex), "sex_gain"))
    out.append(make(normal_counts("X"), "monosomy_x"))
    return tuple(out)


def hypothesis_named(name: str, include_xxyy: bool = True) -> Hypothesis:
    """The hypothesis with ISCN name `name`, or ValueError."""
    for h in hypotheses(include_xxyy):
        if h.name == name:
            return h
    raise ValueError(f"no karyotype hypothesis {name!r}")


def is_normal(karyotype: str) -> bool:
    return karyotype in NORMAL_KARYOTYPES


def true_karyotype(labels: Sequence[int] | np.ndarray, max_missing: int = 2) -> str | None:
    """A labelled cell's karyotype read from its crop labels, or None if it cannot be read.

    Rule (the G-band set has no autosomal monosomy and its 45-crop normal cells each miss one
    autosome crop): the sex chromosomes are counted as they are (1 X and no Y is 45,X, as the
    data README says of its four such cells); an autosome with 3 crops is a trisomy; an
    autosome with fewer than 2 crops is a crop that was not cut out. A cell with no sex
    chromosome crop or more than `max_missing` missing autosome crops (the 36-image cell)
    has no readable karyotype.
    """
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=NUM_CLASSES)
    if counts[X] + counts[Y] == 0:
        return None
    auto = counts[:N_AUTOSOMES]
    if np.maximum(2 - auto, 0).sum() > max_missing:
        return None
    full = counts.copy()
    full[:N_AUTOSOMES] = np.maximum(auto, 2)
    return iscn(full)
