"""The archive's own evidence: class means from the stores' sums, and the setting an index
chooses on its own crops, each named from the other cells only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from karyosearch.labels import CLASS_NAMES
from karyosearch.model.predict import (
    FALLBACK_PROXY_SHARE,
    OTHER_STAIN_FALLBACK,
    OWN_STAIN_FALLBACK,
    ArchiveSetting,
    choose_archive_setting,
    fallback_setting,
)
from karyosearch.search import archive as archive_mod
from karyosearch.search.archive import class_means, class_sums, is_due, unit_rows
from karyosearch.search.engine import SearchIndex
from karyosearch.search.faiss_index import build_faiss
from karyosearch.search.folder import read_index_folder
from karyosearch.search.segments import write_generation, write_index_folder
from karyosearch.search.store import Rows

from .test_engine import ckpt, enc, make_data  # noqa: F401  (session fixtures)
from .test_folder import card

C, D = len(CLASS_NAMES), 64


def archive_rows(cells: int = 8, per_class: int = 2, seed: int = 0) -> tuple[Rows, np.ndarray]:
    """Crops of `cells` cells, `per_class` of each class per cell, scattered around class
    means (returned, unit rows): cell c's crops are ids c*1000.. with cell id "cell-c"."""
    rng = np.random.default_rng(seed)
    means = unit_rows(rng.normal(size=(C, D)))
    ids, vectors, labels, cell_ids = [], [], [], []
    for c in range(cells):
        for j in range(C * per_class):
            label = j % C
            v = means[label] + 0.12 * rng.normal(size=D)
            ids.append(c * 1000 + j)
            vectors.append(v / np.linalg.norm(v))
            labels.append(label)
            cell_ids.append(f"cell-{c}")
    n = len(ids)
    rows = Rows(
        np.asarray(ids, np.int64),
        np.asarray(vectors, np.float32),
        np.asarray(labels, np.int8),
        [f"/a/{i}.png" for i in ids],
        cell_ids,
        [""] * n,
        ["0" * 40] * n,
    )
    return rows, means


def write_archive(path: Path, rows: Rows) -> None:
    c = card()
    c.dimension = D
    write_index_folder(path, c, build_faiss("Flat", rows.embeddings, rows.ids), rows)


def test_class_sums_are_the_live_rows_sums_after_deletes(tmp_path: Path) -> None:
    rows, _ = archive_rows(cells=3)
    write_archive(tmp_path / "idx", rows)
    folder = read_index_folder(tmp_path / "idx")
    gone = rows.ids[::7]
    write_generation(tmp_path / "idx", folder.card, delete={folder.segments[0].name: gone})
    folder = read_index_folder(tmp_path / "idx", embeddings=True)
    sums, counts = class_sums(folder)
    live = folder.rows
    expected = np.zeros((C, D))
    np.add.at(expected, live.labels.astype(int), live.embeddings.astype(np.float64))
    np.testing.assert_allclose(sums, expected, atol=1e-9)
    assert counts.sum() == len(live) == len(rows) - len(gone)
    means = class_means(folder)
    np.testing.assert_allclose(np.linalg.norm(means, axis=1), 1.0, atol=1e-6)


def test_a_store_without_sums_is_summed_from_its_vectors(tmp_path: Path) -> None:
    import h5py

    rows, _ = archive_rows(cells=2)
    write_archive(tmp_path / "idx", rows)
    folder = read_index_folder(tmp_path / "idx")
    before = class_sums(folder)
    with h5py.File(tmp_path / "idx" / folder.card.segments[0]["store"], "a") as f:
        del f["class_sums"], f["class_counts"]  # as an older karyosearch wrote it
    after = class_sums(read_index_folder(tmp_path / "idx"))
    np.testing.assert_allclose(after[0], before[0], atol=1e-9)
    np.testing.assert_array_equal(after[1], before[1])


def test_the_choice_follows_what_names_the_archive_best() -> None:
    rng = np.random.default_rng(1)
    n = 400
    labels = rng.integers(0, C, n)
    right = np.full((n, C), 0.1)
    right[np.arange(n), labels] = 0.6  # proxies that are right
    wrong = np.full((n, C), 0.1)
    wrong[np.arange(n), (labels + 1) % C] = 0.6  # proxies of another stain: wrong
    nb_right = np.repeat(labels[:, None], 16, axis=1)
    noise = rng.integers(0, C, (n, 16))
    sims = np.sort(rng.uniform(0.5, 0.9, (n, 16)), axis=1)[:, ::-1]
    centroids = np.zeros((n, C))
    own, measured = choose_archive_setting(right, centroids, noise, sims, labels)
    assert measured["proxies"] == measured["call"] == 1.0
    assert own.weight == 0.0 and own.centroid_weight == 0.0 and own.chosen  # ties: the proxies
    other, measured = choose_archive_setting(wrong, centroids, nb_right, sims, labels)
    assert measured["proxies"] == 0.0 and measured["call"] == 1.0
    assert other.weight >= 0.5  # the neighbours outweigh the proxies


def test_an_index_chooses_from_other_cells_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows, means = archive_rows(cells=6)
    write_archive(tmp_path / "idx", rows)
    seen = {}
    real = archive_mod.choose_archive_setting

    def spy(scores, centroid_scores, nb_labels, nb_sims, labels, criterion):  # noqa: ANN001
        seen.update(scores=scores, centroids=centroid_scores, nb=nb_labels, sims=nb_sims)
        return real(scores, centroid_scores, nb_labels, nb_sims, labels, criterion)

    monkeypatch.setattr(archive_mod, "choose_archive_setting", spy)
    folder = read_index_folder(tmp_path / "idx")
    entry = archive_mod.choose(folder, means)
    assert entry["chosen"] and entry["measured_on"] == {"crops": len(rows), "cells": 6}
    # the neighbours and class means a crop is named by come from the other cells: brute force
    x = rows.embeddings.astype(np.float64)
    cells = np.asarray(rows.cell_ids)
    sim = x @ x.T
    sim[cells[:, None] == cells[None, :]] = -np.inf
    k = seen["nb"].shape[1]
    top = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(seen["nb"], rows.labels[top])
    np.testing.assert_allclose(seen["sims"], np.take_along_axis(sim, top, 1), atol=1e-5)
    first = cells == "cell-0"
    others = np.zeros((C, D))
    np.add.at(others, rows.labels[~first].astype(int), x[~first])
    np.testing.assert_allclose(seen["centroids"][first], x[first] @ unit_rows(others).T, atol=1e-5)
    np.testing.assert_allclose(seen["scores"], x @ means.T, atol=1e-5)


def test_too_few_cells_take_the_fallback_their_proxies_call_for(tmp_path: Path) -> None:
    rows, means = archive_rows(cells=3)
    write_archive(tmp_path / "own", rows)
    # the crops scatter around the proxies: they name every crop, the archive is of their stain
    entry = archive_mod.choose(read_index_folder(tmp_path / "own"), means)
    assert not entry["chosen"] and entry["fallback"] == "own stain"
    assert entry["accuracy"]["proxies"] == 1.0 and entry["measured_on"] == {"crops": len(rows)}
    assert ArchiveSetting.from_dict(entry) == fallback_setting(1.0)
    assert "100.0% of 144" in entry["reason"]
    # proxies of another stain: each class's proxy is another class's mean
    other = archive_mod.choose(read_index_folder(tmp_path / "own"), np.roll(means, 1, axis=0))
    assert other["fallback"] == "other stain" and other["accuracy"]["proxies"] == 0.0
    assert ArchiveSetting.from_dict(other) == fallback_setting(0.0)
    # no labelled crop at all: nothing to measure, nothing to vote: the fixed setting
    rows.labels[:] = -1
    write_archive(tmp_path / "unlabelled", rows)
    none = archive_mod.choose(read_index_folder(tmp_path / "unlabelled"), means)
    assert "fallback" not in none and ArchiveSetting.from_dict(none) == ArchiveSetting()


def test_the_fallbacks_split_at_the_proxies_share() -> None:
    own, other = (
        fallback_setting(FALLBACK_PROXY_SHARE),
        fallback_setting(FALLBACK_PROXY_SHARE - 1e-9),
    )
    assert (own.k, own.temperature, own.weight) == OWN_STAIN_FALLBACK
    assert (other.k, other.temperature, other.weight) == OTHER_STAIN_FALLBACK
    assert own.weight < other.weight  # the own stain's archive leans on the proxies
    assert not own.chosen and not other.chosen


def test_the_index_chooses_again_only_when_its_labelled_crops_change_enough() -> None:
    c = card()
    assert is_due(c, 100)  # never chosen
    c.archive = {"model_fingerprint": c.model_fingerprint, "labelled": 1000}
    assert not is_due(c, 1040) and is_due(c, 1050) and is_due(c, 940)
    c.model_fingerprint = "another"
    assert is_due(c, 1000)


def test_queries_use_the_setting_the_card_records(tmp_path: Path) -> None:
    rows, means = archive_rows(cells=6)
    write_archive(tmp_path / "idx", rows)
    folder = read_index_folder(tmp_path / "idx")
    chosen = ArchiveSetting(k=8, temperature=0.05, weight=1.0, centroid_weight=0.0, chosen=True)
    folder.card.archive = chosen.to_dict()
    search = SearchIndex(folder)
    assert search.archive_setting == chosen
    query = rows.embeddings[:3]
    scores = np.zeros((3, C))
    scores[:, 5] = 0.9  # the proxies say "6" for all three
    results = search.query_vectors(query, k=4, scores=scores)
    # weight 1: the archive's neighbours decide (crops 0-2 are of classes 1, 2, 3)
    assert [r.call.label for r in results] == ["1", "2", "3"]
    assert [r.predicted.label for r in results] == ["6"] * 3
    evidence = search.archive_evidence(query, [None] * 3)
    assert evidence.setting == chosen and evidence.votes.shape == (3, C)
    np.testing.assert_allclose(evidence.centroid_scores, query @ class_means(folder).T, atol=1e-5)


def test_indexing_records_the_choice_once(tmp_path: Path, ckpt: Path) -> None:  # noqa: F811
    from karyosearch.search.folder import read_card
    from karyosearch.search.update import build_or_update

    data = make_data(tmp_path / "data")
    build_or_update(tmp_path / "idx", data, ckpt)
    built = read_card(tmp_path / "idx")
    assert built.archive["labelled"] == 12
    assert built.archive["model_fingerprint"] == built.model_fingerprint
    assert not built.archive["chosen"]  # a folder of crops without cells: a fallback
    assert built.archive["fallback"] in ("own stain", "other stain")
    build_or_update(tmp_path / "idx", data, ckpt)  # nothing new: nothing written
    assert read_card(tmp_path / "idx").generation == built.generation
