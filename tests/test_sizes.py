"""Relative sizes within a cell, the size model and the label audit."""

from __future__ import annotations

import numpy as np

from karyosearch.cytogenetics import (
    normal_counts,
)
from karyosearch.labels import class_index
from karyosearch.sizes import fit_size_model, labels_contradicted, relative_sizes

from .karyotype.helpers import (
    CLASS_AREA,
    labels_of,
    sized_cell,
)


def test_relative_sizes_ignore_the_cells_scale() -> None:
    areas = np.array([100.0, 400.0, 200.0, 50.0, 800.0])
    rel = relative_sizes(areas)
    assert np.median(rel) == 0.0
    np.testing.assert_allclose(rel, np.log(areas / 200.0))
    np.testing.assert_allclose(relative_sizes(areas * 3.7), rel)  # condensation, scanner scale


def test_fit_size_model_recovers_the_class_sizes() -> None:
    labels = labels_of(normal_counts("XY"))
    cells = [sized_cell(labels, seed=i, scale=0.7 + 0.1 * (i % 6)) for i in range(60)]
    mean, sd = fit_size_model([relative_sizes(a) for a in cells], [labels] * len(cells))
    want = np.log(CLASS_AREA) - np.median(np.log(CLASS_AREA[labels]))
    np.testing.assert_allclose(mean, want, atol=0.03)
    assert np.all((np.asarray(sd) > 0.03) & (np.asarray(sd) < 0.08))  # the spread, 0.05


def test_label_audit_finds_mixed_up_labels_and_fragments_only() -> None:
    labels = labels_of(normal_counts("XX"))
    train = [sized_cell(labels, seed=i) for i in range(60)]
    mean, sd = fit_size_model([relative_sizes(a) for a in train], [labels] * len(train))
    for seed in range(100, 120):  # new normal cells, rightly labelled: nothing flagged
        sizes = relative_sizes(sized_cell(labels, seed=seed, scale=1.3))
        assert len(labels_contradicted(sizes, labels, mean, sd)) == 0
    areas = sized_cell(labels, seed=7)
    # labels mixed up: the 1s labelled 21 and the 21s labelled 1 (a third of the size)
    g1, g21 = np.flatnonzero(labels == 0), np.flatnonzero(labels == class_index("21"))
    mixed = labels.copy()
    mixed[g1], mixed[g21] = class_index("21"), 0
    found = labels_contradicted(relative_sizes(areas), mixed, mean, sd)
    assert set(found) == set(g1) | set(g21)
    fragment = areas.copy()
    fragment[0] = 3.0  # a speck labelled 1
    assert list(labels_contradicted(relative_sizes(fragment), labels, mean, sd)) == [0]
