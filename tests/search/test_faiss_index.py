"""`--factory auto`: the factory by archive size, search parameters tuned on the index's own
vectors, and the recall it promises met on queries it never saw."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from karyosearch.search.faiss_index import (
    FLAT_MAX,
    AutoChoice,
    FactoryError,
    auto_choice,
    auto_factory,
    build_faiss,
    check_trainable,
    default_search_params,
    new_base_index,
    parse_auto,
)


def clustered(n: int, d: int = 64, classes: int = 24, seed: int = 0) -> np.ndarray:
    """Unit vectors around 24 class means with a decaying spectrum, like the embeddings."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((classes, d))
    scale = 0.6 / np.sqrt(np.arange(1, d + 1))  # low intrinsic dimension
    x = means[rng.integers(0, classes, n)] * 0.35 + rng.standard_normal((n, d)) * scale
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def recall_at_10(
    index: faiss.Index, base: np.ndarray, queries: np.ndarray, ids: np.ndarray
) -> float:
    _, exact = faiss.knn(queries, base, 10, metric=faiss.METRIC_INNER_PRODUCT)
    exact = ids[exact]
    _, found = index.search(queries, 10)
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, found, strict=True)]))


def test_parse_auto() -> None:
    assert parse_auto("auto") == 0.95 and parse_auto("AUTO:0.99") == 0.99
    assert parse_auto("IVF1024,SQ8") is None and parse_auto("Flat") is None
    with pytest.raises(FactoryError):
        parse_auto("auto:2")
    with pytest.raises(FactoryError):
        parse_auto("auto:x")
    new_base_index("auto", 64)  # accepted before embedding, as any factory string is
    check_trainable("auto:0.9", 64, 3)


def test_factory_by_size() -> None:
    assert auto_factory(FLAT_MAX, 2048) == "Flat"
    assert auto_factory(1_000_000, 2048) == "IVF1024,SQ8"
    assert auto_factory(30_000, 2048) == "IVF128,SQ8"
    assert auto_factory(10_000_000, 2048) == "IVF4096,SQ8"
    for n in (FLAT_MAX + 1, 50_000, 5_000_000):  # always enough vectors to train the lists
        nlist = int(auto_factory(n, 2048).split("IVF")[1].split(",")[0])
        assert 39 * nlist <= n


@pytest.mark.parametrize("target", [0.9, 0.95])
def test_auto_meets_its_recall_target_on_queries_it_never_saw(target: float) -> None:
    everything = clustered(30_300)
    base, fresh = everything[:30_000], everything[30_000:]  # one distribution, fresh not indexed
    ids = np.arange(100, 100 + len(base), dtype=np.int64)
    index = build_faiss(f"auto:{target}", base, ids)
    chosen = auto_choice(index)
    assert isinstance(chosen, AutoChoice) and chosen.factory == "IVF128,SQ8"
    assert chosen.search_params.startswith("nprobe=") and chosen.recall >= target
    assert default_search_params(index) == chosen.search_params  # what the card records
    got = recall_at_10(index, base, fresh, ids)
    assert got >= target - 0.03, (got, chosen)
    found_ids = index.search(base[:5], 1)[1][:, 0]
    assert found_ids.tolist() == ids[:5].tolist()  # its own vectors come back, by id


def test_auto_keeps_small_archives_exact() -> None:
    everything = clustered(550)
    base, fresh = everything[:500], everything[500:]
    ids = np.arange(500, dtype=np.int64)
    index = build_faiss("auto", base, ids)
    chosen = auto_choice(index)
    assert chosen.factory == "Flat" and chosen.search_params == "" and chosen.recall == 1.0
    assert recall_at_10(index, base, fresh, ids) == 1.0
