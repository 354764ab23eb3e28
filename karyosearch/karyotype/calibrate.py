"""Calibrated per-crop probabilities: `log_softmax(scores / T)` (`model.predict.log_probs`),
with T fitted on validation crops by minimising the negative log-likelihood
(`fit_temperature`); with the crops' relative sizes, `log_softmax(scores / T + size_weight *
log p(size | class))`, T and the weight fitted together (`fit_size_weight`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from ..model.predict import ArchiveEvidence, log_probs
from ..sizes import size_log_likelihood

if TYPE_CHECKING:
    from .params import KaryotypeParams


def fit_temperature(
    scores: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    bounds: tuple[float, float] = (1e-4, 1e3),
) -> float:
    """The temperature T minimising the mean NLL of `labels` under log_softmax(scores / T).

    Fitted over log T (scipy `minimize_scalar`, bounded), on held-out validation crops.
    """
    from scipy.optimize import minimize_scalar

    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    if len(scores) == 0:
        raise ValueError("no scores to fit a temperature on")

    def nll(log_t: float) -> float:
        return float(
            -log_probs(scores, float(np.exp(log_t)))[np.arange(len(labels)), labels].mean()
        )

    res = minimize_scalar(
        nll,
        bounds=(np.log(bounds[0]), np.log(bounds[1])),
        method="bounded",
        options={"xatol": 1e-5},
    )
    return float(np.exp(res.x))


def cell_log_probs(
    scores: np.ndarray,
    params: KaryotypeParams,
    sizes: np.ndarray | None = None,
    archive: ArchiveEvidence | None = None,
) -> np.ndarray:
    """A cell's per-crop class log-probabilities: `log_probs`, with the size term added when
    `params` has a size model and weight and the crops' `relative_sizes` are given. With
    `archive` (`SearchIndex.archive_evidence`) the index's setting weighs in the archive as
    the query command's call does: the proxy cosines moved towards the archive's class means
    (its centroid weight), then mixed with the neighbours' votes (its weight); the cell's own
    temperature stays the one fitted for the karyotype."""
    temperature = params.temperature or 1.0
    scores = np.asarray(scores, np.float64)
    if archive is not None and archive.setting.centroid_weight:
        scores = scores + archive.setting.centroid_weight * np.asarray(
            archive.centroid_scores, np.float64
        )
    if sizes is None or not params.size_weight or params.size_mean is None or not params.size_sd:
        logp = log_probs(scores, temperature)
    else:
        from scipy.special import log_softmax

        ll = size_log_likelihood(sizes, params.size_mean, params.size_sd)
        logits = scores / temperature + params.size_weight * ll
        logp = log_softmax(logits, 1)
    if archive is None:
        return logp
    weight, votes = archive.setting.weight, np.asarray(archive.votes)
    mixed = (1.0 - weight) * np.exp(logp) + weight * votes
    voted = votes.sum(axis=1, keepdims=True) > 0  # no labelled neighbour: as before
    return np.where(voted, np.log(np.maximum(mixed, 1e-300)), logp)


def fit_size_weight(
    scores: np.ndarray,
    sizes: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    params: KaryotypeParams,
    max_weight: float = 4.0,
) -> KaryotypeParams:
    """T and `size_weight` minimising the NLL of `labels` under `cell_log_probs`, fitted
    together (scipy L-BFGS-B over log T and the weight in [0, max_weight]) on validation
    crops with their relative sizes; `params` must hold the size model."""
    from scipy.optimize import minimize

    if params.size_mean is None:
        raise ValueError("fit_size_model first: params hold no size model")
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, int)
    rows = np.arange(len(labels))

    def nll(x: np.ndarray) -> float:
        trial = replace(params, temperature=float(np.exp(x[0])), size_weight=float(x[1]))
        return float(-cell_log_probs(scores, trial, sizes)[rows, labels].mean())

    start = np.array([np.log(params.temperature or fit_temperature(scores, labels)), 0.5])
    res = minimize(
        nll, start, method="L-BFGS-B", bounds=[(np.log(1e-4), np.log(1e3)), (0, max_weight)]
    )
    return replace(params, temperature=float(np.exp(res.x[0])), size_weight=float(res.x[1]))
