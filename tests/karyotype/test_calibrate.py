"""Calibrated per-crop probabilities: the temperature and the size weight."""

from __future__ import annotations

import numpy as np

from karyosearch.cytogenetics import (
    normal_counts,
)
from karyosearch.karyotype.calibrate import cell_log_probs, fit_size_weight, fit_temperature
from karyosearch.karyotype.params import (
    KaryotypeParams,
)
from karyosearch.labels import CLASS_NAMES
from karyosearch.model.predict import log_probs
from karyosearch.sizes import fit_size_model, relative_sizes

from .helpers import (
    labels_of,
    scores_of,
    sized_cell,
)


def test_temperature_fit_recovers_a_known_temperature() -> None:
    rng = np.random.default_rng(0)
    true_t = 0.05
    scores = rng.normal(0.0, 0.1, (4000, len(CLASS_NAMES)))  # cosine-like scale
    p = np.exp(log_probs(scores, true_t))
    labels = np.array([rng.choice(len(CLASS_NAMES), p=row) for row in p])
    t = fit_temperature(scores, labels)
    assert abs(np.log(t / true_t)) < 0.15


def test_fit_size_weight_weighs_size_by_what_it_tells() -> None:
    """On validation crops whose scores confuse classes of different size, the fitted size
    weight is well above 0 and lowers the NLL; where the sizes carry no class information
    it stays near 0."""
    labels = labels_of(normal_counts("XX"))
    train = [labels] * 30
    mean, sd = fit_size_model(
        [relative_sizes(sized_cell(t, seed=i)) for i, t in enumerate(train)], train
    )
    base = KaryotypeParams(temperature=1.0, size_mean=mean, size_sd=sd)
    val_labels = np.concatenate([labels] * 20)
    scores = scores_of(val_labels, seed=5, sure=1.5, noise=1.0)
    informative = np.concatenate(
        [relative_sizes(sized_cell(labels, seed=100 + i)) for i in range(20)]
    )
    fitted = fit_size_weight(scores, informative, val_labels, base)
    rows = np.arange(len(val_labels))
    assert fitted.size_weight > 0.3
    nll = -cell_log_probs(scores, fitted, informative)[rows, val_labels].mean()
    plain = -log_probs(scores, fit_temperature(scores, val_labels))[rows, val_labels].mean()
    assert nll < plain - 0.1
    noise = np.random.default_rng(7).permutation(informative)
    assert fit_size_weight(scores, noise, val_labels, base).size_weight < 0.1


def test_the_archive_mixes_into_a_cells_probabilities_under_the_index_setting() -> None:
    from karyosearch.karyotype.params import KaryotypeParams
    from karyosearch.model.predict import ArchiveEvidence, ArchiveSetting

    scores = np.zeros((2, len(CLASS_NAMES)))
    scores[:, 0] = 0.3  # the encoder leans to "1" for both crops
    votes = np.zeros_like(scores)
    votes[0, 1] = 1.0  # the archive says "2" for the first crop, nothing for the second
    centroids = np.zeros_like(scores)
    centroids[:, 2] = 0.5  # the class means lean to "3"
    params = KaryotypeParams(temperature=0.05)
    plain = cell_log_probs(scores, params)
    setting = ArchiveSetting(k=5, temperature=0.02, weight=0.6, centroid_weight=0.0)
    mixed = cell_log_probs(scores, params, archive=ArchiveEvidence(votes, centroids, setting))
    expected = np.log(0.4 * np.exp(plain[0]) + 0.6 * votes[0])
    np.testing.assert_allclose(mixed[0], expected)
    np.testing.assert_allclose(mixed[1], plain[1])  # no labelled neighbour: unchanged
    np.testing.assert_allclose(np.exp(mixed).sum(axis=1), 1.0)
    # a centroid weight moves the proxies towards the class means before the mix
    moved = ArchiveSetting(k=5, temperature=0.02, weight=0.6, centroid_weight=1.0)
    pulled = cell_log_probs(scores, params, archive=ArchiveEvidence(votes, centroids, moved))
    assert pulled[1].argmax() == 2 and mixed[1].argmax() == 0
