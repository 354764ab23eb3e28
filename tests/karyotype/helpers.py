"""Hand-made cells for the karyotype tests: score matrices, sizes and embeddings."""

from __future__ import annotations

import numpy as np

from karyosearch.cytogenetics import (
    normal_counts,
)
from karyosearch.karyotype.params import (
    KaryotypeParams,
)
from karyosearch.karyotype.simulate import LabelledCell
from karyosearch.labels import CLASS_NAMES, class_index

PARAMS = KaryotypeParams(temperature=1.0)


def labels_of(counts: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(len(counts)), counts)


def scores_of(
    labels: np.ndarray, seed: int = 0, sure: float = 9.0, noise: float = 0.5
) -> np.ndarray:
    """Logits (T = 1) that are near one-hot on the true class, with a little noise."""
    rng = np.random.default_rng(seed)
    s = rng.normal(0.0, noise, (len(labels), len(CLASS_NAMES)))
    s[np.arange(len(labels)), labels] += sure
    return s


def paths_of(n: int) -> list[str]:
    return [f"crop{i:02d}.png" for i in range(n)]


def counts_with(sex: str, **delta: int) -> np.ndarray:
    counts = normal_counts(sex)
    for name, d in delta.items():
        counts[class_index(name.lstrip("c"))] += d
    return counts


def _cells(n: int, seed: int) -> list[LabelledCell]:
    out = []
    for i in range(n):
        sex = "XX" if i % 2 else "XY"
        labels = labels_of(normal_counts(sex))
        out.append(
            LabelledCell(
                scores_of(labels, seed=seed + i, sure=6.0, noise=0.8),
                labels,
                f"46,{sex}",
                f"cell{i}",
            )
        )
    return out


def homologue_embeddings(labels: np.ndarray, seed: int = 0, dim: int = 64) -> np.ndarray:
    """Unit embeddings where crops of one class lie close together (homologues look alike)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(CLASS_NAMES), dim))
    e = centres[labels] + 0.3 * rng.normal(size=(len(labels), dim))
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def with_embeddings(cells: list[LabelledCell], seed: int) -> list[LabelledCell]:
    """The cells with homologue_embeddings of their labels (seeded per cell)."""
    return [
        LabelledCell(
            c.scores, c.labels, c.karyotype, c.cell_id, homologue_embeddings(c.labels, seed + i)
        )
        for i, c in enumerate(cells)
    ]


CLASS_AREA = np.linspace(2000.0, 400.0, len(CLASS_NAMES))


def sized_cell(labels: np.ndarray, seed: int, scale: float = 1.0, spread: float = 0.05):
    """Areas of a cell's crops: the class's area x the cell's condensation `scale`, with a
    log-normal spread per crop."""
    rng = np.random.default_rng(seed)
    return CLASS_AREA[labels] * scale * np.exp(rng.normal(0.0, spread, len(labels)))
