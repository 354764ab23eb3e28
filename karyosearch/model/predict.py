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


@dataclass
class Prediction:
    """The encoder's own class for a query."""

    label: str  # "1".."22", "X", "Y"
    score: float  # cosine to the nearest proxy (kind "cosine"), or softmax probability ("softmax")
    margin: float  # score of the predicted class minus that of the runner-up
    kind: str  # "cosine" for the proxy networks, "softmax" for the plain `resnext` classifier


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


def log_probs(scores: np.ndarray, temperature: float) -> np.ndarray:
    """Per-crop class log-probabilities log_softmax(scores / T), shape (N, classes)."""
    from scipy.special import log_softmax

    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return log_softmax(np.asarray(scores, dtype=np.float64) / temperature, axis=1)

