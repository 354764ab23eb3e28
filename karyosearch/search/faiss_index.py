"""The FAISS side of an index: factory strings, building, training, updating, searching.

Every index is an `IndexIDMap2` over a FAISS factory string (Flat, HNSW32, IVF1024,PQ64...)
with the inner-product metric (cosine on unit vectors), keyed by the store's int64 ids.
faiss is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ..errors import UserError
from .store import Rows

DEFAULT_FACTORY = "Flat"


class FactoryError(UserError):
    """A FAISS factory string that cannot be built or trained on the vectors at hand."""


def _check_factory_string(factory: str) -> str:
    factory = factory.strip()
    if not factory:
        raise FactoryError("empty FAISS factory string; try Flat, HNSW32 or IVF1024,PQ64")
    if re.match(r"^IDMap2?\s*,", factory, re.IGNORECASE):
        raise FactoryError(f"{factory!r}: leave out IDMap; the index is always wrapped in IDMap2")
    return factory


def new_base_index(factory: str, dimension: int) -> Any:
    """An empty FAISS index for `factory` with the inner-product metric (not yet wrapped).

    Polysemous training of PQ codes is switched off: the factory turns it on for `PQ` and
    `IVF...,PQ` indexes, yet it only serves Hamming pre-filtering (`polysemous_ht`), which
    karyosearch never uses, and it costs about 25 s per PQ index however few the vectors.
    """
    import faiss

    factory = _check_factory_string(factory)
    try:
        base = faiss.index_factory(dimension, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        reason = str(err).strip().splitlines()[-1].split(": ", 1)[-1][:200]
        raise FactoryError(f"{factory!r} is no usable FAISS factory string ({reason})") from None
    _no_polysemous_training(base)
    return base


def _no_polysemous_training(index: Any) -> None:
    import faiss

    index = faiss.downcast_index(index)
    if hasattr(index, "do_polysemous_training"):
        index.do_polysemous_training = False
    for name in ("index", "base_index"):  # IndexPreTransform (OPQ, PCA), IndexRefine
        inner = getattr(index, name, None)
        if inner is not None:
            _no_polysemous_training(inner)


def check_trainable(factory: str, dimension: int, n: int) -> None:
    """Raise FactoryError when `n` vectors are too few to train `factory` (before embedding)."""
    import faiss

    base = new_base_index(factory, dimension)
    if base.is_trained:
        return
    ivf = faiss.try_extract_index_ivf(base)
    if ivf is not None and n < ivf.nlist:
        raise FactoryError(
            f"{factory!r} has {ivf.nlist} IVF lists but only {n} vectors to train them; index at "
            f"least {ivf.nlist} images (better {39 * ivf.nlist}), use fewer lists "
            f"(IVF{max(1, n // 39)},...) or Flat"
        )


def default_search_params(index: Any) -> str:
    """Search parameters that keep recall high: nprobe for IVF, efSearch for HNSW."""
    import faiss

    base = faiss.downcast_index(index.index) if hasattr(index, "id_map") else index
    ivf = faiss.try_extract_index_ivf(base)
    if ivf is not None:
        return f"nprobe={min(ivf.nlist, 32)}"
    if "HNSW" in type(base).__name__:
        return "efSearch=128"
    return ""


def apply_search_params(index: Any, params: str) -> None:
    import faiss

    if params:
        try:
            faiss.ParameterSpace().set_index_parameters(index, params)
        except RuntimeError as err:
            raise FactoryError(f"cannot apply search parameters {params!r} ({err})") from None


def build_faiss(factory: str, vectors: np.ndarray, ids: np.ndarray) -> Any:
    """A new IDMap2 index over `factory` holding `vectors` under `ids`, trained on them."""
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    dimension = vectors.shape[1]
    base = new_base_index(factory, dimension)
    if not base.is_trained:
        check_trainable(factory, dimension, len(vectors))
        try:
            base.train(vectors)
        except RuntimeError as err:
            reason = str(err).strip().splitlines()[-1].split(": ", 1)[-1][:200]
            raise FactoryError(
                f"cannot train {factory!r} on {len(vectors)} vectors ({reason})"
            ) from None
    index = faiss.IndexIDMap2(base)
    if len(vectors):
        index.add_with_ids(vectors, ids)
    return index


def faiss_ids(index: Any) -> np.ndarray:
    """The ids held by an IDMap index, in insertion order."""
    import faiss

    return faiss.vector_to_array(index.id_map).astype(np.int64)


def update_faiss(
    index: Any, factory: str, rows: Rows, remove_ids: np.ndarray, add_positions: np.ndarray
) -> Any:
    """Remove `remove_ids` and add the rows at `add_positions`; rebuild from `rows` when the index
    type cannot remove vectors (HNSW) or when nothing was indexed yet."""
    if index is None or index.ntotal == 0:
        return build_faiss(factory, rows.embeddings, rows.ids)
    if len(remove_ids):
        try:
            index.remove_ids(np.ascontiguousarray(remove_ids, dtype=np.int64))
        except RuntimeError:  # e.g. HNSW: remove_ids not implemented
            return build_faiss(factory, rows.embeddings, rows.ids)
    if len(add_positions):
        index.add_with_ids(
            np.ascontiguousarray(rows.embeddings[add_positions]),
            np.ascontiguousarray(rows.ids[add_positions]),
        )
    return index
