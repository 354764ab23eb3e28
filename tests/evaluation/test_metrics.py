"""Metrics against brute force and independent implementations (scikit-learn, PML)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import precision_recall_fscore_support

from karyosearch.evaluation.metrics import (
    classification_report,
    first_hit_ranks,
    nearest_proxy_predict,
    recall_at_k,
)

KS = (1, 2, 3, 4, 8, 50)


def brute_recall(x: np.ndarray, y: np.ndarray, ids: np.ndarray, ks) -> dict[int, float]:
    """Plain full sort per query; ties put other-class items first (they earn no credit)."""
    sims = x.astype(np.float64) @ x.astype(np.float64).T
    hits = {k: 0 for k in ks}
    for q in range(len(x)):
        others = np.flatnonzero(ids != ids[q])
        same = (y[others] == y[q]).astype(int)
        order = np.lexsort((same, -sims[q, others]))  # by score desc, then other-class first
        ranked = same[order]
        for k in ks:
            hits[k] += int(ranked[:k].any())
    return {k: hits[k] / len(x) for k in ks}


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recall_matches_brute_force_on_random_vectors(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = unit(rng.normal(size=(60, 8)))
    y = rng.integers(0, 5, size=60)
    ids = np.arange(60)
    assert recall_at_k(x, y, KS) == pytest.approx(brute_recall(x, y, ids, KS))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_recall_with_exact_ties_and_duplicates(seed: int) -> None:
    # Small integer vectors: every inner product is an exact integer, so ties are real ties.
    rng = np.random.default_rng(seed)
    base = rng.integers(-1, 2, size=(30, 4)).astype(np.float32)
    x = np.concatenate([base, base[:10]])  # ten duplicated vectors under other ids
    y = rng.integers(0, 4, size=40)
    ids = rng.permutation(1000)[:40] + 7  # arbitrary, non-positional ids
    assert recall_at_k(x, y, KS, ids=ids) == pytest.approx(brute_recall(x, y, ids, KS))


def test_self_is_excluded_by_id_but_duplicates_count() -> None:
    x = unit(np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]))
    # item 1 duplicates item 0 under another id and shares its class: a hit at K=1.
    y = np.array([0, 0, 1, 2])
    ranks = first_hit_ranks(x, y, ids=[10, 11, 12, 13])
    assert ranks.tolist() == [1, 1, 0, 0]
    assert recall_at_k(x, y, (1,))[1] == pytest.approx(0.5)
    # the same vector under the query's own id would be the query: ids must be unique.
    with pytest.raises(ValueError, match="unique"):
        recall_at_k(x, y, ids=[10, 10, 12, 13])


def test_tie_with_other_class_earns_no_credit() -> None:
    x = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]], np.float32)
    y = np.array([0, 1, 0])
    # query 0: item 1 (class 1) ties item 2 (class 0); the tie ranks the wrong class first.
    # query 1 is the only class-1 item: it never hits.
    assert first_hit_ranks(x, y).tolist() == [2, 0, 2]
    assert recall_at_k(x, y, (1, 2)) == {1: 0.0, 2: pytest.approx(2 / 3)}


def test_recall_is_chunked_without_changing_the_answer() -> None:
    rng = np.random.default_rng(5)
    x = unit(rng.normal(size=(50, 6)))
    y = rng.integers(0, 6, size=50)
    whole = first_hit_ranks(x, y)
    np.testing.assert_array_equal(first_hit_ranks(x, y, block_elements=7), whole)


def test_recall_rejects_bad_input() -> None:
    x = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError):
        recall_at_k(x, [0, 1])
    with pytest.raises(ValueError):
        recall_at_k(x, [0, 1, 2], ks=(0,))


def test_recall_at_1_matches_pytorch_metric_learning() -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("pytorch_metric_learning")
    from pytorch_metric_learning.distances import DotProductSimilarity
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    rng = np.random.default_rng(11)
    centres = rng.normal(size=(6, 16))
    y = np.repeat(np.arange(6), 12)
    x = unit(centres[y] + 1.5 * rng.normal(size=(len(y), 16)))
    calc = AccuracyCalculator(
        include=("precision_at_1",),
        knn_func=CustomKNN(DotProductSimilarity()),
        device=torch.device("cpu"),
    )
    ref = calc.get_accuracy(torch.from_numpy(x), torch.from_numpy(y), ref_includes_query=True)
    ours = recall_at_k(x, y, (1,))[1]
    assert 0.2 < ours < 1.0  # a non-trivial case
    assert ours == pytest.approx(ref["precision_at_1"])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_classification_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # some classes absent from the truth, some never predicted, some in neither
    t = rng.choice([0, 1, 2, 3, 5, 7, 23], size=80)
    p = np.where(rng.random(80) < 0.6, t, rng.choice([0, 1, 4, 5, 9], size=80))
    rep = classification_report(p, t)
    sp, sr, sf, _ = precision_recall_fscore_support(t, p, average="macro", zero_division=0)
    assert rep.precision == pytest.approx(sp)
    assert rep.recall == pytest.approx(sr)
    assert rep.f1 == pytest.approx(sf)
    assert rep.accuracy == pytest.approx(np.mean(p == t))
    np.testing.assert_array_equal(rep.confusion, sk_confusion(t, p, labels=range(24)))
    per_p, per_r, per_f, support = precision_recall_fscore_support(
        t, p, labels=range(24), average=None, zero_division=0
    )
    present = np.isin(np.arange(24), np.union1d(t, p))
    np.testing.assert_allclose(rep.per_class_precision[present], per_p[present])
    np.testing.assert_allclose(rep.per_class_f1[present], per_f[present])
    has_truth = support > 0
    np.testing.assert_allclose(rep.per_class_accuracy[has_truth], per_r[has_truth])
    assert np.isnan(rep.per_class_accuracy[~has_truth]).all()
    np.testing.assert_array_equal(rep.support, support)
    assert rep.averaged.tolist() == present.tolist()


def test_classification_perfect_and_empty() -> None:
    t = np.arange(24).repeat(2)
    rep = classification_report(t, t)
    assert (rep.accuracy, rep.precision, rep.recall, rep.f1) == (1.0, 1.0, 1.0, 1.0)
    empty = classification_report([], [])
    assert np.isnan(empty.accuracy) and np.isnan(empty.f1)
    with pytest.raises(ValueError):
        classification_report([24], [0])


def test_nearest_proxy_uses_unit_proxies() -> None:
    proxies = np.array([[10.0, 0.0], [0.0, 0.1], [-1.0, -1.0]])
    x = unit(np.array([[1.0, 0.2], [0.3, 1.0], [-1.0, -0.9]]))
    assert nearest_proxy_predict(x, proxies).tolist() == [0, 1, 2]
