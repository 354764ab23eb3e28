"""The one classifier: class scores of the encoder (`Encoder.embed_and_score`) -> classes.

Scores are the cosines to the class proxies for the proxy networks (nearest-proxy
classification: the predicted class is the argmax of x . p_c) and the logits for the plain
`resnext` classifier. The search engine, the benchmark and the karyotype all read classes
from scores through these functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..labels import CLASS_NAMES

# The archive call (`archive_call`): where an index of labelled crops is at hand, a query's
# class mixes the proxies' softmax with the vote of its ARCHIVE_K nearest archived crops.
# Chosen on the validation queries of three stand-ins for an unseen lab, never on their test
# queries: the highest mean accuracy among the settings that beat the proxies alone on each
# (benchmarks/bench_archive_call.py, results/archive_call.json; test queries: 36.7% -> 82.9%
# and 36.6% -> 80.9% across stains, 96.0% -> 95.3% on degraded crops of the same stain).
ARCHIVE_K = 5  # archived neighbours that vote
ARCHIVE_WEIGHT = 0.85  # w: the neighbours' share of the call
ARCHIVE_TEMPERATURE = 0.02  # T of the proxies' softmax (cosine scores); logits use T = 1


@dataclass
class Prediction:
    """The encoder's own class for a query."""

    label: str  # "1".."22", "X", "Y"
    score: float  # cosine to the nearest proxy (kind "cosine"), or softmax probability ("softmax")
    margin: float  # score of the predicted class minus that of the runner-up
    kind: str  # "cosine" (proxy networks), "softmax" (`resnext`), "probability" (archive call)


def predicted_classes(scores: np.ndarray) -> np.ndarray:
    """Class index per row of class scores (N, classes): the argmax (first on a tie), int64."""
    return np.asarray(scores).argmax(axis=1).astype(np.int64)


def predict(scores: np.ndarray, arch: str) -> list[Prediction]:
    """Class, score and margin per row of class scores (cosines or logits, see Encoder)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(f"class scores of shape {scores.shape}")
    kind = "softmax" if arch == "resnext" else "cosine"
    if kind == "softmax":
        z = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores = z / z.sum(axis=1, keepdims=True)
    top2 = np.argsort(-scores, axis=1, kind="stable")[:, :2]
    out = []
    for row, (a, b) in zip(scores, top2, strict=True):
        out.append(Prediction(CLASS_NAMES[a], float(row[a]), float(row[a] - row[b]), kind))
    return out


def log_softmax(x: np.ndarray) -> np.ndarray:
    """log softmax over the last axis, in float64 and stable (the row maximum taken out first).

    numpy rather than scipy.special: importing scipy.special costs a query 0.25 s."""
    x = np.asarray(x, dtype=np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def log_probs(scores: np.ndarray, temperature: float) -> np.ndarray:
    """Per-crop class log-probabilities log_softmax(scores / T), shape (N, classes)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return log_softmax(np.asarray(scores, dtype=np.float64) / temperature)


def neighbour_votes(labels: np.ndarray, sims: np.ndarray, num_classes: int) -> np.ndarray:
    """Each query's vote shares over classes from its neighbours' labels (N, k) -> (N, classes).

    A neighbour's vote is 1/(labelled neighbours); unlabelled neighbours (label -1) do not vote.
    A tie between classes goes to the larger summed similarity (a 1e-6 nudge), as `knn_vote`."""
    labels = np.asarray(labels, dtype=np.int64)
    sims = np.asarray(sims, dtype=np.float64)
    votes = np.zeros((len(labels), num_classes))
    valid = labels >= 0
    rows = np.broadcast_to(np.arange(len(labels))[:, None], labels.shape)
    np.add.at(votes, (rows[valid], labels[valid]), 1.0 + 1e-6 * sims[valid])
    total = votes.sum(axis=1, keepdims=True)
    return np.divide(votes, total, out=np.zeros_like(votes), where=total > 0)


def combined_call(
    scores: np.ndarray, votes: np.ndarray, weight: float, temperature: float
) -> np.ndarray:
    """Class probabilities from the proxies and the archive: (1 - w) softmax(scores / T) + w votes.

    `scores` are the encoder's class scores (cosines to the proxies), `votes` the neighbours'
    shares (`neighbour_votes`); a query with no labelled neighbour keeps the proxies' call.
    The embeddings travel between labs better than the proxies do (benchmarks/
    bench_archive_call.py), so where an index of labelled crops is at hand both are used."""
    proxy = np.exp(log_softmax(np.asarray(scores, dtype=np.float64) / temperature))
    votes = np.asarray(votes, dtype=np.float64)
    has_votes = votes.sum(axis=1, keepdims=True) > 0
    return np.where(has_votes, (1.0 - weight) * proxy + weight * votes, proxy)


def archive_call(scores: np.ndarray, votes: np.ndarray, arch: str) -> list[Prediction]:
    """The class of each query from the proxies and the archive (`combined_call` with the
    ARCHIVE_* setting): label, probability, and margin over the runner-up's probability."""
    temperature = 1.0 if arch == "resnext" else ARCHIVE_TEMPERATURE
    probs = combined_call(scores, votes, ARCHIVE_WEIGHT, temperature)
    top2 = np.argsort(-probs, axis=1, kind="stable")[:, :2]
    return [
        Prediction(CLASS_NAMES[a], float(row[a]), float(row[a] - row[b]), "probability")
        for row, (a, b) in zip(probs, top2, strict=True)
    ]
