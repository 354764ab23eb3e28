"""What an index of labelled crops adds to a class call: its class means, and the setting
under which it trusts itself (`model.predict.ArchiveSetting`).

A lab's archive may be of the encoder's own stain and scanner, where the proxies are right
and the archive should only nudge them, or of another, where the proxies fail and the
archive's neighbours should decide (benchmarks/bench_archive_call.py). No fixed setting
serves both, so each index chooses its own on its own labelled crops: whole cells are drawn
(seeded), each of their crops is named as a query from another lab would be, by its proxies,
the class means of the *other* cells and its nearest crops of other cells, and the setting
that names most of them right is recorded in the card (`archive`). `karyosearch index`
chooses again when a write changes the number of labelled crops by RECALIBRATE_CHANGE or
more, or the model. An index with fewer than MIN_CELLS labelled cells (a lab starting out, or
a folder of crops without cell ids) cannot name its crops from other cells; it measures how
many of them its proxies name right and takes the fallback for an archive of the encoder's
own stain or of another (`model.predict.fallback_setting`). One built with the `resnext`
classifier keeps the fixed setting (its scores are logits, not cosines to proxies).

Class means come from the per-segment class sums the stores keep (`store.read_class_sums`),
less the rows the tombstones delete, so opening an index reads no vector for them.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

from ..labels import CLASS_NAMES
from ..model.predict import (
    ARCHIVE_KS,
    FALLBACK_PROXY_SHARE,
    ArchiveSetting,
    choose_archive_setting,
    fallback_setting,
)
from .folder import IndexCard, IndexFolder, read_card, read_index_folder
from .segments import write_generation
from .store import read_class_sums, read_embeddings, sum_classes

CALIBRATION_CROPS = 4000  # about this many labelled crops (whole cells) name themselves
MIN_CELLS = 4  # fewer labelled cells: the fixed setting
MIN_CROPS = 100  # fewer labelled crops with a cell: the fixed setting
RECALIBRATE_CHANGE = 0.05  # choose again when the labelled count moves by this fraction
EXTRA_DEPTH = 64  # neighbours fetched past k and the largest cell (unlabelled rows skipped)


def class_sums(folder: IndexFolder) -> tuple[np.ndarray, np.ndarray]:
    """Per class, the sum (C, D) and count (C,) of the live labelled vectors of `folder`."""
    sums = np.zeros((len(CLASS_NAMES), folder.card.dimension))
    counts = np.zeros(len(CLASS_NAMES), np.int64)
    for seg in folder.segments:
        store = folder.path / seg.info["store"]
        seg_sums, seg_counts = read_class_sums(store)
        sums += seg_sums
        counts += seg_counts
        if len(seg.deleted):
            pos = seg.rows.positions(seg.deleted)
            pos = np.sort(pos[pos >= 0])
            gone_sums, gone_counts = sum_classes(read_embeddings(store, pos), seg.rows.labels[pos])
            sums -= gone_sums
            counts -= gone_counts
    return sums, counts


def unit_rows(sums: np.ndarray) -> np.ndarray:
    """Each row divided by its norm (zero rows stay zero): class means as unit vectors."""
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return np.divide(sums, norms, out=np.zeros_like(sums), where=norms > 0).astype(np.float32)


def class_means(folder: IndexFolder) -> np.ndarray:
    """The unit class means of the archive's labelled vectors (C, D); zero for a class it lacks."""
    return unit_rows(class_sums(folder)[0])


def labelled_count(folder: IndexFolder) -> int:
    return int((folder.rows.labels >= 0).sum())


def is_due(card: IndexCard, labelled: int) -> bool:
    """Whether an index of `labelled` labelled crops should choose its setting again: never
    chosen, another model, or the count moved by RECALIBRATE_CHANGE or more."""
    entry = card.archive or {}
    if entry.get("model_fingerprint") != card.model_fingerprint:
        return True
    before = int(entry.get("labelled", 0))
    return abs(labelled - before) >= RECALIBRATE_CHANGE * max(before, 1)


def encoder_proxies(encoder: Any) -> np.ndarray | None:
    """The encoder's unit class proxies (C, D) as numpy; None for the `resnext` classifier."""
    if not encoder.cfg.uses_proxies or not hasattr(encoder, "unit_proxies"):
        return None
    return encoder.unit_proxies().detach().float().cpu().numpy()


def choose(
    folder: IndexFolder, unit_proxies: np.ndarray, seed: int = 0, criterion: str = "accuracy"
) -> dict[str, Any]:
    """The card's `archive` entry: the setting this archive chooses on its own crops (see the
    module docstring), the accuracies it measured, and what it was measured on; `chosen`
    false (the fixed setting) when it has too few labelled cells."""
    rows = folder.rows
    entry: dict[str, Any] = {
        "model_fingerprint": folder.card.model_fingerprint,
        "labelled": labelled_count(folder),
    }
    with_cell = np.flatnonzero((rows.labels >= 0) & np.asarray([bool(c) for c in rows.cell_ids]))
    cells = np.asarray(rows.cell_ids, dtype=object)[with_cell]
    unique = np.unique(cells) if len(cells) else np.zeros(0, dtype=object)
    rng = np.random.default_rng(seed)
    if len(unique) < MIN_CELLS or len(with_cell) < MIN_CROPS:
        return {**entry, **fallback(folder, unit_proxies, rng)}
    picked, n = [], 0
    for cell in rng.permutation(unique):
        if n >= CALIBRATION_CROPS:
            break
        picked.append(cell)
        n += int((cells == cell).sum())
    take = np.isin(cells, picked)
    query_pos, query_cells = with_cell[take], cells[take]
    vectors = folder.embeddings_of(rows.ids[query_pos])
    labels = rows.labels[query_pos].astype(np.int64)

    # class means of the other cells: the archive's sums less the query's own cell
    sums, _ = class_sums(folder)
    centroid_scores = np.empty((len(query_pos), len(CLASS_NAMES)), np.float32)
    for cell in picked:
        mine = query_cells == cell
        own, _ = sum_classes(vectors[mine], labels[mine])
        centroid_scores[mine] = vectors[mine] @ unit_rows(sums - own).T

    # nearest labelled crops of other cells
    largest = max(int((query_cells == c).sum()) for c in picked)
    depth = min(len(rows), max(ARCHIVE_KS) + largest + EXTRA_DEPTH)
    sims, ids = folder.search(vectors, depth)
    k = max(ARCHIVE_KS)
    nb_labels = np.full((len(query_pos), k), -1, np.int64)
    nb_sims = np.zeros((len(query_pos), k))
    all_cells = np.asarray(rows.cell_ids, dtype=object)
    for q in range(len(query_pos)):
        valid = ids[q] >= 0
        pos = rows.positions(ids[q][valid])
        keep = (all_cells[pos] != query_cells[q]) & (rows.labels[pos] >= 0)
        pos, row_sims = pos[keep][:k], sims[q][valid][keep][:k]
        nb_labels[q, : len(pos)] = rows.labels[pos]
        nb_sims[q, : len(pos)] = row_sims
    scores = vectors @ np.asarray(unit_proxies, np.float32).T
    setting, measured = choose_archive_setting(
        scores, centroid_scores, nb_labels, nb_sims, labels, criterion
    )
    return {
        **entry,
        **setting.to_dict(),
        "measured_on": {"crops": int(len(query_pos)), "cells": len(picked)},
        "accuracy": {"proxies": measured["proxies"], "call": measured["call"]},
    }


def fallback(folder: IndexFolder, unit_proxies: np.ndarray, rng: np.random.Generator) -> dict:
    """The setting, reason and measure of an index too small (or without cell ids) to choose
    its own: the share of its labelled crops (CALIBRATION_CROPS at most, drawn) that its
    proxies name right decides between the two fallbacks."""
    rows = folder.rows
    labelled = np.flatnonzero(rows.labels >= 0)
    why = f"fewer than {MIN_CELLS} labelled cells, or {MIN_CROPS} labelled crops, with a cell id"
    if len(labelled) == 0:
        return {**ArchiveSetting().to_dict(), "reason": f"{why}, and no labelled crop"}
    if len(labelled) > CALIBRATION_CROPS:
        labelled = np.sort(rng.choice(labelled, CALIBRATION_CROPS, replace=False))
    vectors = folder.embeddings_of(rows.ids[labelled])
    scores = vectors @ np.asarray(unit_proxies, np.float32).T
    share = float(np.mean(scores.argmax(axis=1) == rows.labels[labelled]))
    own = share >= FALLBACK_PROXY_SHARE
    kind = "the encoder's own stain" if own else "another stain or lab"
    return {
        **fallback_setting(share).to_dict(),
        "fallback": "own stain" if own else "other stain",
        "reason": f"{why}; its proxies name {100 * share:.1f}% of {len(labelled)} of its "
        f"labelled crops, so the fallback for an archive of {kind}",
        "measured_on": {"crops": len(labelled)},
        "accuracy": {"proxies": share},
    }


def calibrate_if_due(index_dir: Any, encoder: Any, labelled: int) -> IndexCard | None:
    """Under the writer lock, after a write: when the index (now holding `labelled` labelled
    crops) is due (`is_due`), choose its setting again with `encoder`'s proxies (the fixed
    setting for a `resnext` classifier) and record it in a new generation in which only the
    card changes. Returns the new card, or None when nothing was due."""
    if not is_due(read_card(Path(index_dir)), labelled):
        return None
    folder = read_index_folder(index_dir)
    proxies = encoder_proxies(encoder)
    if proxies is None:
        entry = {
            "model_fingerprint": folder.card.model_fingerprint,
            "labelled": labelled_count(folder),
            **ArchiveSetting().to_dict(),
            "reason": "the encoder's scores are logits",
        }
    else:
        entry = choose(folder, proxies)
    card = copy.deepcopy(folder.card)
    card.archive = entry
    return write_generation(index_dir, folder.card, card=card)


def describe(entry: dict[str, Any]) -> str:
    """One line for a person: what the index chose for its archive call and why."""
    setting = ArchiveSetting.from_dict(entry)
    how = (
        f"k {setting.k}, T {setting.temperature:g}, weight on the neighbours {setting.weight:g}, "
        f"pull towards the class means {setting.centroid_weight:g}"
    )
    if not setting.chosen:
        why = entry.get("reason", "not chosen yet; `karyosearch index` chooses when it next runs")
        which = (
            f"the {entry['fallback']} fallback" if entry.get("fallback") else "the fixed setting"
        )
        return f"archive call: {which} ({how}): {why}"
    accuracy = entry.get("accuracy", {})
    measured = entry.get("measured_on", {})
    return (
        f"archive call: {how}; it names {100 * accuracy.get('call', 0):.1f}% of "
        f"{measured.get('crops', 0)} of its own crops right from their other cells "
        f"({100 * accuracy.get('proxies', 0):.1f}% by the proxies alone)"
    )
