"""The numpy softmax the query path uses is scipy's (scipy.special is slow to import)."""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax as scipy_log_softmax

from karyosearch.model.predict import combined_call, log_probs, log_softmax


def test_log_softmax_is_scipys_even_for_large_scores() -> None:
    x = np.random.default_rng(0).normal(size=(5, 24)) * 40  # cosines / T reach +-20
    assert np.allclose(log_softmax(x), scipy_log_softmax(x, axis=1), atol=1e-12)
    assert np.allclose(log_probs(x, 0.05), scipy_log_softmax(x / 0.05, axis=1), atol=1e-9)
    probs = combined_call(x, np.zeros_like(x), 0.5, 0.05)
    assert np.allclose(probs.sum(axis=1), 1.0)
