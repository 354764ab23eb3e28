"""The whole karyotype fit (`karyosearch karyotype fit`) on made-up cells: what it fits, on
which cells, and that test cells never reach it."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from karyosearch.cytogenetics import normal_counts
from karyosearch.data.datasets import Dataset, Item
from karyosearch.karyotype.fit import fit_karyotype
from karyosearch.model.embed import EmbeddedFiles

from .helpers import CLASS_AREA, counts_with, labels_of, scores_of


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    """Nine patients of one cell each; patient 4 has a trisomy 21."""
    items = []
    for p in range(9):
        counts = counts_with("XY", c21=1) if p == 4 else normal_counts("XX" if p % 2 else "XY")
        for j, lab in enumerate(labels_of(counts)):
            items.append(Item(f"/d/p{p}.1/{j:02d}.png", int(lab), f"p{p}.1", f"p{p}"))
    return Dataset(Path("/d"), "gband", items)


def embedder(dataset: Dataset, scramble: set[str] = frozenset()):  # noqa: ANN201
    """Scores near one-hot on the true class, areas by class; the cells in `scramble` get
    random scores instead."""
    label = {it.path: it.label for it in dataset.items}
    cell = {it.path: it.cell_id for it in dataset.items}

    def embed(paths: list[str]) -> EmbeddedFiles:
        labels = np.array([label[p] for p in paths])
        scores = scores_of(labels, seed=1, sure=4.0, noise=1.0)
        rng = np.random.default_rng(2)
        emb = rng.normal(size=(len(paths), 16)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        areas = CLASS_AREA[labels] * rng.uniform(0.95, 1.05, len(paths))
        noise = np.random.default_rng(3)
        for i, p in enumerate(paths):
            if cell[p] in scramble:
                scores[i] = noise.normal(0, 3, scores.shape[1])
        return EmbeddedFiles(list(paths), emb, scores.astype(np.float32), [], areas)

    return embed


ENCODER = SimpleNamespace(
    train_record={"split": "karyo", "seed": 0}, fingerprint="f00d", score_temperature=0.05
)


def test_fit_on_training_and_validation_cells_only(dataset: Dataset) -> None:
    fit = fit_karyotype(ENCODER, dataset, homologue_weights=(0.0,), embed=embedder(dataset))
    assert fit.split == "karyo" and fit.seed == 0 and not fit.warnings
    sides = {c.cell_id: c.side for c in fit.cells}
    assert sides["p4.1"] == "test"  # the abnormal patient is held out
    assert sorted(sides.values()).count("val") >= 1
    p = fit.params
    assert p.fitted["model_fingerprint"] == "f00d" and p.fitted["split"] == "karyo"
    assert p.temperature is not None and 0 < p.temperature < 100
    assert p.size_mean is not None and p.size_weight >= 0
    assert fit.n_simulated["normal"] > 0 and fit.n_simulated["abnormal"] > 0
    assert set(p.penalties) == {"trisomy", "sex_gain", "monosomy_x"}

    # whatever the test cells' scores, the parameters are the same: they are never fitted on
    test_cells = {c for c, s in sides.items() if s == "test"}
    again = fit_karyotype(
        ENCODER, dataset, homologue_weights=(0.0,), embed=embedder(dataset, test_cells)
    )
    a, b = asdict(fit.params), asdict(again.params)
    a["fitted"].pop("at"), b["fitted"].pop("at")
    assert a == b
