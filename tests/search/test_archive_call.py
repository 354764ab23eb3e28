"""The archive call: the proxies' softmax mixed with the vote of the nearest labelled crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from karyosearch.labels import CLASS_NAMES
from karyosearch.model.predict import (
    ARCHIVE_K,
    archive_call,
    combined_call,
    neighbour_votes,
)
from karyosearch.search.engine import SearchIndex, knn_vote
from karyosearch.search.update import build_or_update

from .test_engine import ckpt, enc, make_data  # noqa: F401  (session fixtures)


def test_votes_are_shares_of_the_labelled_neighbours():
    labels = np.array([[2, 2, 5, -1], [-1, -1, -1, -1]])
    sims = np.array([[0.9, 0.8, 0.95, 0.99], [0.5, 0.4, 0.3, 0.2]])
    votes = neighbour_votes(labels, sims, 6)
    np.testing.assert_allclose(votes[0], [0, 0, 2 / 3, 0, 0, 1 / 3], atol=1e-5)
    assert votes[1].sum() == 0  # no labelled neighbour: no vote


def test_a_tied_vote_goes_to_the_more_similar_class_as_knn_vote():
    labels, sims = np.array([[1, 3, 3, 1]]), np.array([[0.9, 0.7, 0.6, 0.8]])
    assert neighbour_votes(labels, sims, 4).argmax() == knn_vote(labels[0], sims[0]) == 1


def test_the_call_mixes_proxies_and_votes_by_weight():
    scores = np.array([[0.9, 0.1, 0.0]])  # the proxies say class 0
    votes = np.array([[0.0, 1.0, 0.0]])  # the archive says class 1
    assert combined_call(scores, votes, 0.0, 0.05).argmax() == 0
    assert combined_call(scores, votes, 1.0, 0.05).argmax() == 1
    mixed = combined_call(scores, votes, 0.3, 0.05)
    np.testing.assert_allclose(mixed.sum(), 1.0)
    proxy = np.exp(scores / 0.05) / np.exp(scores / 0.05).sum()
    np.testing.assert_allclose(mixed, 0.7 * proxy + 0.3 * votes)


def test_no_votes_keeps_the_proxies_call():
    scores = np.array([[0.2, 0.8, 0.1]])
    call = combined_call(scores, np.zeros((1, 3)), 1.0, 0.05)
    assert call.argmax() == 1 and call.sum() == pytest.approx(1.0)


def test_archive_call_names_the_class():
    scores = np.zeros((1, len(CLASS_NAMES)))
    scores[0, 20] = 0.6  # the proxies: "21"
    votes = np.zeros_like(scores)
    votes[0, 20] = 1.0
    [call] = archive_call(scores, votes, "proxy-resnext-cbam")
    assert call.label == "21" and 0.5 < call.score <= 1.0 and call.margin > 0


def test_query_calls_with_the_archive_and_never_votes_for_itself(
    tmp_path: Path,
    ckpt: Path,  # noqa: F811
):
    data = make_data(tmp_path / "data", per_class=3)
    build_or_update(tmp_path / "idx", data, ckpt)
    search = SearchIndex.open(tmp_path / "idx")
    target = data / "X" / "img0.png"
    [r] = search.query_images([target], k=3)
    assert r.call is not None and r.call.label in CLASS_NAMES
    assert r.neighbours[0].path == str(target)  # archived itself: listed first
    assert r.to_dict()["call"]["label"] == r.call.label
    # the vote ignores its own file: relabelling only that stored row must not move the call
    rows = search.rows
    own = rows.paths.index(str(target))
    original = rows.labels[own]
    rows.labels[own] = CLASS_NAMES.index("Y") if original != CLASS_NAMES.index("Y") else 0
    [again] = search.query_images([target], k=3)
    rows.labels[own] = original
    assert again.call == r.call
    assert ARCHIVE_K + 1 <= len(search)  # the fetch covered the vote and the self-match
