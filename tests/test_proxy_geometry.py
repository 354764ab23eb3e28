"""benchmarks/probe_proxy_geometry.py's figures on embeddings whose answers are known."""

from __future__ import annotations

import numpy as np

from .conftest import load_benchmark


def test_geometry_of_crops_on_and_off_their_proxies() -> None:
    probe = load_benchmark("probe_proxy_geometry")
    proxies = np.eye(4)[:2]  # two classes in 4-d: the span is the first two axes
    s = np.sqrt(0.5)
    x = np.array([[1, 0, 0, 0], [s, 0, s, 0], [0, 1, 0, 0], [0, s, 0, -s]], dtype=float)
    labels = np.array([0, 0, 1, 1])
    g = probe.geometry(x, labels, proxies)
    assert g["accuracy"] == 1.0
    np.testing.assert_allclose(g["cosine_own_proxy"], (1 + s) / 2)
    np.testing.assert_allclose(g["cosine_best_other_proxy"], 0.0)
    np.testing.assert_allclose(g["norm2_in_proxy_span"], 0.75)  # (1 + 0.5 + 1 + 0.5) / 4
    np.testing.assert_allclose(g["cosine_nearest_same_class"], s)
    np.testing.assert_allclose(g["cosine_nearest_other_class"], [0.0], atol=1e-12)
    assert g["recall_at_1"] == 1.0
    # a crop pushed off its proxy toward a crop of the other class: still right by its proxy
    # (cosine 0.5 against 0), but that crop is now its nearest (0.61 against 0.5 to its own)
    x[1] = [0.5, 0.0, 0.0, -np.sqrt(0.75)]
    g = probe.geometry(x, labels, proxies)
    assert g["accuracy"] == 1.0 and g["recall_at_1"] == 0.75
