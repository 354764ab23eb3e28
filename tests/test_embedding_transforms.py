"""benchmarks/bench_embedding_transforms.py's transforms on synthetic embeddings: each fit on
training rows only, each giving unit rows, whitening undoing a stretched axis, and the proxy
pull moving a crop toward the proxy it is nearest."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest

from .conftest import load_benchmark


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_benchmark("bench_embedding_transforms")


def test_whitening_brings_a_stretched_cloud_to_equal_spread(bench: ModuleType) -> None:
    rng = np.random.default_rng(0)
    cloud = rng.normal(size=(4000, 3)) * np.array([10.0, 1.0, 0.1])
    white = cloud @ bench.whitening(cloud, 1e-9)
    np.testing.assert_allclose(np.cov(white.T), np.eye(3), atol=0.05)
    # shrinkage leaves the long axis longer than the short one, but less so than before
    shrunk = np.cov((cloud @ bench.whitening(cloud, 1.0)).T).diagonal()
    assert shrunk[0] > shrunk[2] and shrunk[0] / shrunk[2] < 1e4


def test_every_transform_gives_unit_rows_and_the_pull_moves_toward_the_nearest_proxy(
    bench: ModuleType,
) -> None:
    rng = np.random.default_rng(1)
    proxies = bench.unit(rng.normal(size=(4, 8)))
    labels = np.repeat(np.arange(4), 30)
    train = bench.unit(proxies[labels] + 0.3 * rng.normal(size=(120, 8)))
    queries = bench.unit(proxies[[0, 1, 2, 3]] + 0.6 * rng.normal(size=(4, 8)))
    found = bench.transforms(train, labels, proxies, temperature=0.05)
    assert {"plain", "centred", "whitened a=0.1", "proxy pull b=1.0"} <= set(found)
    for name, transform in found.items():
        out = transform(queries)
        assert out.shape == queries.shape, name
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, atol=1e-6, err_msg=name)
    nearest = (queries @ proxies.T).argmax(1)
    pulled = found["proxy pull b=2.0"](queries)
    before = np.einsum("ij,ij->i", queries, proxies[nearest])
    after = np.einsum("ij,ij->i", pulled, proxies[nearest])
    assert (after > before).all()
    np.testing.assert_array_equal(found["plain"](queries), bench.unit(queries))
