"""The one classifier: class scores of the encoder (`Encoder.embed_and_score`) -> classes.

Scores are the cosines to the class proxies for the proxy networks (nearest-proxy
classification: the predicted class is the argmax of x . p_c) and the logits for the plain
`resnext` classifier. The search engine, the benchmark and the karyotype all read classes
from scores through these functions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..labels import CLASS_NAMES

# The archive call (`archive_call`): where an index of labelled crops is at hand, a query's
# class mixes the proxies (moved towards the archive's class means) with the vote of its
# nearest archived crops. Each index chooses its own setting on its own labelled crops
# (`choose_archive_setting`, run when `karyosearch index` writes it): an archive of another
# stain leans on its neighbours, one of the encoder's own stain on the proxies. An index that
# cannot choose so (fewer than 4 labelled cells, or crops without cell ids) takes one of two
# fallbacks by how many of its crops its proxies name right (`fallback_setting`). The
# setting below serves only an index that has measured nothing (a `resnext` encoder, or a
# card written before it chose): chosen with the earlier encoders on the validation queries
# of three stand-ins for an unseen lab, the highest mean accuracy among the settings that beat
# the proxies alone on each (benchmarks/bench_archive_call.py). With today's encoders that
# rule picks another (results/archive_call.json, `chosen`); kept, as so few indexes use it.
ARCHIVE_K = 5  # archived neighbours that vote
ARCHIVE_WEIGHT = 0.85  # w: the neighbours' share of the call
ARCHIVE_TEMPERATURE = 0.02  # T of the proxies' softmax (cosine scores); logits use T = 1

# An index that cannot choose (fewer than 4 labelled cells, or crops without a cell id) is
# of the encoder's own stain when its proxies name at least this share of its own labelled
# crops right (the proxies never saw them; no cell needed), else of another stain, and takes
# that side's fallback (`fallback_setting`). Set by reasoning, not tuned: the stand-ins'
# archives sit far on either side (benchmarks/bench_archive_fallback.py).
FALLBACK_PROXY_SHARE = 0.8

# The two fallbacks, chosen on validation queries of small archives (1-3 whole cells) and of
# archives without cell ids, on each side of FALLBACK_PROXY_SHARE the setting with the highest
# mean accuracy (benchmarks/bench_archive_fallback.py, results/archive_fallback.json): of the
# encoder's own stain, a nudge that keeps the proxies' call (the fixed setting above cost
# 4.1 points on one-cell G-band archives); of another stain, the neighbours alone. Chosen
# again when a shipped encoder changes (the script says when these differ from its choice):
# with the 96-px G-band encoder of 10-epoch second stage (8, 0.2, 0.1), 95.00% against the
# proxies' 94.97% (results/archive_fallback.g-96px-e10.json); with the 6-epoch one before it
# (5, 0.05, 0.15); with the 64-px one (5, 0.2, 0.2).
OWN_STAIN_FALLBACK = (8, 0.2, 0.1)  # k, T, w
OTHER_STAIN_FALLBACK = (5, 0.02, 1.0)

# What an index may choose from (benchmarks/bench_archive_call.py measures the same grid).
ARCHIVE_KS = (5, 8, 16)
ARCHIVE_TEMPERATURES = (0.02, 0.05, 0.1)
ARCHIVE_CENTROID_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
ARCHIVE_WEIGHTS = tuple(round(0.05 * i, 2) for i in range(21))


@dataclass(frozen=True)
class ArchiveSetting:
    """How a query's class mixes the proxies with an archive (`combined_call`).

    probabilities = (1 - weight) softmax((proxy cosines + centroid_weight * cosines to the
    archive's class means) / temperature) + weight * (vote shares of the k nearest archived
    crops).
    """

    k: int = ARCHIVE_K
    temperature: float = ARCHIVE_TEMPERATURE
    weight: float = ARCHIVE_WEIGHT
    centroid_weight: float = 0.0
    chosen: bool = False  # chosen by the index on its own crops (else a fallback or fixed)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict | None) -> ArchiveSetting:
        """The setting an index card records (`{}` or None: the fixed setting)."""
        if not raw:
            return cls()
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in raw.items() if k in names})


def fallback_setting(proxy_share: float) -> ArchiveSetting:
    """The setting of an index that cannot choose its own, from the share of its labelled
    crops its proxies name right: at least FALLBACK_PROXY_SHARE, an archive of the encoder's
    own stain (the proxies keep the call); below it, of another stain (the neighbours decide)."""
    k, t, w = OWN_STAIN_FALLBACK if proxy_share >= FALLBACK_PROXY_SHARE else OTHER_STAIN_FALLBACK
    return ArchiveSetting(k=k, temperature=t, weight=w)


@dataclass
class ArchiveEvidence:
    """What an index says about N query vectors: the vote shares of their nearest archived
    crops (N, classes), their cosines to its class means (N, classes) and its setting."""

    votes: np.ndarray
    centroid_scores: np.ndarray
    setting: ArchiveSetting

    def take(self, rows: np.ndarray | list[int]) -> ArchiveEvidence:
        return ArchiveEvidence(self.votes[rows], self.centroid_scores[rows], self.setting)


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
    scores: np.ndarray,
    votes: np.ndarray,
    weight: float,
    temperature: float,
    centroid_scores: np.ndarray | None = None,
    centroid_weight: float = 0.0,
) -> np.ndarray:
    """Class probabilities from the proxies and the archive (`ArchiveSetting`):
    (1 - w) softmax((scores + b * centroid_scores) / T) + w votes.

    `scores` are the encoder's class scores (cosines to the proxies), `centroid_scores` the
    cosines to the archive's class means (`search.archive`), `votes` the neighbours' shares
    (`neighbour_votes`); a query with no labelled neighbour keeps the (moved) proxies' call.
    The embeddings travel between labs better than the proxies do (benchmarks/
    bench_archive_call.py), so where an index of labelled crops is at hand both are used."""
    logits = np.asarray(scores, dtype=np.float64)
    if centroid_scores is not None and centroid_weight:
        logits = logits + centroid_weight * np.asarray(centroid_scores, dtype=np.float64)
    proxy = np.exp(log_softmax(logits / temperature))
    return _mix(proxy, np.asarray(votes, dtype=np.float64), weight)


def _mix(proxy: np.ndarray, votes: np.ndarray, weight: float) -> np.ndarray:
    """(1 - w) proxy + w votes, rows without any vote left as the proxies say."""
    has_votes = votes.sum(axis=1, keepdims=True) > 0
    return np.where(has_votes, (1.0 - weight) * proxy + weight * votes, proxy)


def archive_call(
    scores: np.ndarray,
    votes: np.ndarray,
    arch: str,
    setting: ArchiveSetting | None = None,
    centroid_scores: np.ndarray | None = None,
) -> list[Prediction]:
    """The class of each query from the proxies and the archive (`combined_call` with the
    index's `setting`, default the fixed one): label, probability, and margin over the
    runner-up's probability."""
    setting = setting or ArchiveSetting()
    temperature = 1.0 if arch == "resnext" else setting.temperature
    probs = combined_call(
        scores, votes, setting.weight, temperature, centroid_scores, setting.centroid_weight
    )
    top2 = np.argsort(-probs, axis=1, kind="stable")[:, :2]
    return [
        Prediction(CLASS_NAMES[a], float(row[a]), float(row[a] - row[b]), "probability")
        for row, (a, b) in zip(probs, top2, strict=True)
    ]


def choose_archive_setting(
    scores: np.ndarray,
    centroid_scores: np.ndarray,
    neighbour_labels: np.ndarray,
    neighbour_sims: np.ndarray,
    labels: np.ndarray,
    criterion: str = "accuracy",
) -> tuple[ArchiveSetting, dict[str, float]]:
    """The setting under which an archive names its own labelled crops best.

    Every argument describes the same N archived crops, each seen as a query from another
    cell: `scores` (N, classes) their proxy cosines, `centroid_scores` their cosines to the
    class means of the other cells' crops, `neighbour_labels`/`neighbour_sims` (N, >= max k)
    their nearest crops of other cells, most similar first (label -1: none), `labels` their
    classes. The grid is ARCHIVE_KS x ARCHIVE_TEMPERATURES x ARCHIVE_CENTROID_WEIGHTS x
    ARCHIVE_WEIGHTS; ties go to the least weight on the archive (neighbours, then centroids),
    then to the fewest neighbours and the lowest T. `criterion` "accuracy" (the default:
    chosen on validation queries, benchmarks/bench_archive_call.py) or "log_likelihood" (the
    mean log-probability of the true class). Returns the setting and the accuracies (proxies
    alone, the call) on these crops.
    """
    if criterion not in ("accuracy", "log_likelihood"):
        raise ValueError(f"criterion {criterion!r}")
    labels = np.asarray(labels, np.int64)
    num_classes = np.asarray(scores).shape[1]
    rows = np.arange(len(labels))
    votes = {
        k: neighbour_votes(neighbour_labels[:, :k], neighbour_sims[:, :k], num_classes)
        for k in ARCHIVE_KS
    }
    best: tuple | None = None
    for t in ARCHIVE_TEMPERATURES:
        for b in ARCHIVE_CENTROID_WEIGHTS:
            proxy = np.exp(log_softmax((scores + b * centroid_scores) / t))
            for k in ARCHIVE_KS:
                for w in ARCHIVE_WEIGHTS:
                    probs = _mix(proxy, votes[k], w)
                    accuracy = float(np.mean(probs.argmax(axis=1) == labels))
                    if criterion == "accuracy":
                        value = accuracy
                    else:
                        value = float(np.mean(np.log(probs[rows, labels] + 1e-4)))
                    key = (value, -w, -b, -k, -t)
                    if best is None or key > best[0]:
                        best = (key, ArchiveSetting(k, t, w, b, chosen=True), accuracy)
    assert best is not None
    proxies = float(np.mean(np.asarray(scores).argmax(axis=1) == labels)) if len(rows) else 0.0
    return best[1], {"proxies": proxies, "call": best[2], "crops": len(labels)}
