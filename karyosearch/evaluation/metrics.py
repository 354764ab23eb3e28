"""Retrieval and classification metrics: pure functions of (embeddings, labels) or (pred, labels).

Recall@K here is the image-retrieval metric of the MIDL 2020 paper (and of Song et al. 2016,
Movshovitz-Attias et al. 2017): the fraction of queries that find at least one image of their
own class among their K nearest neighbours. It is NOT the information-retrieval recall (the
fraction of all relevant items retrieved); pytorch-metric-learning's users mixed the two up
(its issue 283). For K = 1 it equals precision@1.

Macro averages follow scikit-learn's `precision_recall_fscore_support(average="macro",
zero_division=0)`: they are taken over the classes present in the ground truth or in the
predictions; a 0/0 precision, recall or F1 counts as 0. A class absent from both is left out
(it has no defined value and would otherwise flatter or punish the model arbitrarily).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..labels import NUM_CLASSES

# Similarity entries computed per block of queries: 2^24 float32 = 64 MiB (plus masks).
_BLOCK_ELEMENTS = 1 << 24


def _check_ks(ks: Iterable[int]) -> list[int]:
    out = [int(k) for k in ks]
    if not out or any(k < 1 for k in out):
        raise ValueError(f"K must be positive integers, got {out}")
    return out


def first_hit_ranks(
    embeddings: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    ids: Sequence[int] | np.ndarray | None = None,
    block_elements: int = _BLOCK_ELEMENTS,
) -> np.ndarray:
    """Per query, the rank (1-based) of its first same-class neighbour; 0 when it has none.

    Every item is a query against all other items, ranked by inner product (the cosine for
    unit vectors). The query itself is excluded by id, never by position or score: another
    item with an identical vector (a duplicate image under another id) is a neighbour like
    any other. Ties are broken against the query: an other-class item that scores exactly as
    high as the best same-class item ranks ahead of it, so ties never earn credit and the
    result does not depend on the order of the items.

    Memory stays bounded (about `block_elements` similarities at a time), so 30k x 2048 runs
    in a few hundred MiB.
    """
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    y = np.asarray(labels).reshape(-1)
    n = len(x)
    if x.ndim != 2 or len(y) != n:
        raise ValueError(f"need embeddings (N, D) and N labels, got {x.shape} and {len(y)}")
    ident = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids).reshape(-1)
    if len(ident) != n:
        raise ValueError(f"need one id per embedding, got {len(ident)} ids for {n} embeddings")
    if len(np.unique(ident)) != n:
        raise ValueError("ids must be unique: the query is excluded by its id")
    ranks = np.zeros(n, dtype=np.int64)
    step = max(1, block_elements // max(n, 1))
    for start in range(0, n, step):
        stop = min(start + step, n)
        sims = x[start:stop] @ x.T  # (b, n)
        is_self = ident[start:stop, None] == ident[None, :]
        same = (y[start:stop, None] == y[None, :]) & ~is_self
        other = ~same & ~is_self
        best_same = np.where(same, sims, -np.inf).max(axis=1)  # (b,)
        ahead = (other & (sims >= best_same[:, None])).sum(axis=1)
        has_same = same.any(axis=1)
        ranks[start:stop] = np.where(has_same, ahead + 1, 0)
    return ranks


def recall_at_k(
    embeddings: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    ks: Iterable[int] = (1, 2, 4, 8),
    ids: Sequence[int] | np.ndarray | None = None,
) -> dict[int, float]:
    """Recall@K of the image-retrieval literature, for each K in `ks`; fractions in [0, 1].

    Each item is a query against all OTHER items (the query excluded by its id, `ids`
    defaulting to the positions; a duplicate vector under another id does count). A query
    scores 1 at K when at least one item of its class is among its K most similar items by
    inner product, else 0; Recall@K is the mean over all queries (a query whose class has no
    other item scores 0). Ties with other-class items count against the query (see
    `first_hit_ranks`).

    This is NOT the information-retrieval recall (relevant items retrieved / all relevant
    items): it is the fraction of queries with a hit in the top K, and Recall@1 equals
    precision@1 (pytorch-metric-learning's `precision_at_1`).
    """
    k_list = _check_ks(ks)
    ranks = first_hit_ranks(embeddings, labels, ids)
    if len(ranks) == 0:
        return {k: float("nan") for k in k_list}
    hit = ranks > 0
    return {k: float(np.mean(hit & (ranks <= k))) for k in k_list}


def nearest_proxy_predict(embeddings: np.ndarray, proxies: np.ndarray) -> np.ndarray:
    """Class index per embedding: the argmax of x . p_c over the unit-normalised proxies p_c."""
    x = np.asarray(embeddings, dtype=np.float32)
    p = np.asarray(proxies, dtype=np.float32)
    p = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
    return (x @ p.T).argmax(axis=1).astype(np.int64)


def confusion_matrix(
    pred: Sequence[int] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    num_classes: int = NUM_CLASSES,
) -> np.ndarray:
    """(num_classes, num_classes) counts: row = true class, column = predicted class."""
    p = np.asarray(pred, dtype=np.int64).reshape(-1)
    t = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(p) != len(t):
        raise ValueError(f"{len(p)} predictions for {len(t)} labels")
    if len(t) and (min(p.min(), t.min()) < 0 or max(p.max(), t.max()) >= num_classes):
        raise ValueError(f"class indices must lie in 0..{num_classes - 1}")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


@dataclass(frozen=True)
class ClassificationReport:
    """Classification quality on a set of images; fractions in [0, 1]."""

    accuracy: float  # correct / images
    precision: float  # macro average over `averaged` classes (0/0 counts as 0)
    recall: float  # macro average over `averaged` classes (0/0 counts as 0)
    f1: float  # mean of per-class F1 = 2PR/(P+R) over `averaged` classes (0/0 counts as 0)
    per_class_precision: np.ndarray  # (num_classes,), NaN where the class is in neither
    per_class_recall: np.ndarray  # (num_classes,) = per-class accuracy, NaN with no true image
    per_class_f1: np.ndarray  # (num_classes,), NaN where the class is in neither
    support: np.ndarray  # (num_classes,) true images per class
    averaged: np.ndarray  # (num_classes,) bool: class present in labels or predictions
    confusion: np.ndarray  # (num_classes, num_classes): row true, column predicted

    @property
    def per_class_accuracy(self) -> np.ndarray:
        """Fraction of each class's images predicted as that class (NaN for absent classes)."""
        return self.per_class_recall


def classification_report(
    pred: Sequence[int] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    num_classes: int = NUM_CLASSES,
) -> ClassificationReport:
    """Accuracy over images; macro precision, recall and F1 over classes; confusion matrix.

    Macro averages are over the classes present in `labels` or `pred` (scikit-learn's
    `precision_recall_fscore_support(average="macro", zero_division=0)` with its default
    label set): a class never predicted has precision 0, a predicted class with no true image
    has recall 0, and a class absent from both is left out of the average. With every class
    in the test set (the paper's 720-image split) this is the mean over all 24 classes.
    """
    cm = confusion_matrix(pred, labels, num_classes)
    n = int(cm.sum())
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)  # true images per class
    predicted = cm.sum(axis=0)  # predictions per class
    averaged = (support + predicted) > 0

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)

    precision = ratio(tp, predicted.astype(np.float64))
    recall = ratio(tp, support.astype(np.float64))
    f1 = ratio(2 * tp, (support + predicted).astype(np.float64))  # = 2PR / (P + R)

    def macro(values: np.ndarray) -> float:
        return float(values[averaged].mean()) if averaged.any() else float("nan")

    nan = np.full(num_classes, np.nan)
    return ClassificationReport(
        accuracy=float(tp.sum() / n) if n else float("nan"),
        precision=macro(precision),
        recall=macro(recall),
        f1=macro(f1),
        per_class_precision=np.where(averaged, precision, nan),
        per_class_recall=np.where(support > 0, recall, nan),
        per_class_f1=np.where(averaged, f1, nan),
        support=support,
        averaged=averaged,
        confusion=cm,
    )
