"""The FAISS side of an index: factory strings, building, training, updating, searching.

Every index is an `IndexIDMap2` over a FAISS factory string (Flat, HNSW32, IVF1024,PQ64...)
with the inner-product metric (cosine on unit vectors), keyed by the store's int64 ids.
faiss is imported inside the functions, so importing this module stays cheap.

`auto` (or `auto:0.99`, a recall target; 0.95 by default) picks the factory by archive size
(`auto_factory`) and then, as autofaiss does, tunes nprobe or efSearch on a held-out sample of
the index's own vectors until recall@10 against exact search meets the target
(`tune_search_params`); the built index carries the choice (`AutoChoice`, `auto_choice`).
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UserError
from .store import Rows

DEFAULT_FACTORY = "Flat"
AUTO = "auto"
DEFAULT_RECALL = 0.95  # recall@10 against exact search that `auto` tunes for
# Below this many vectors `auto` keeps the exact Flat index: a query scans at most
# FLAT_MAX x 8 KB (160 MB) and nothing needs training. The scan is memory-bound: a few ms on
# the AMD EPYC machines, 25 ms of a 49 ms query for 28,135 vectors on an Intel Xeon
# (2026-12-02, benchmarks/results/query.gband-96px.json; `auto`'s IVF128,SQ8 there: 19 ms).
FLAT_MAX = 20_000
TUNE_QUERIES = 200  # held-out queries of the index's own vectors that `auto` tunes on
TUNE_K = 10  # the recall@k it tunes


class FactoryError(UserError):
    """A FAISS factory string that cannot be built or trained on the vectors at hand."""


def _check_factory_string(factory: str) -> str:
    factory = factory.strip()
    if not factory:
        raise FactoryError("empty FAISS factory string; try Flat, HNSW32 or IVF1024,PQ64")
    if re.match(r"^IDMap2?\s*,", factory, re.IGNORECASE):
        raise FactoryError(f"{factory!r}: leave out IDMap; the index is always wrapped in IDMap2")
    return factory


@dataclass
class AutoChoice:
    """What `--factory auto` chose for an archive (recorded in the card)."""

    factory: str  # the FAISS factory string built
    search_params: str  # the tuned ParameterSpace string, e.g. "nprobe=16" ("" for Flat)
    recall_target: float  # recall@10 asked for
    recall: float  # recall@10 measured at `search_params` on the held-out queries (1.0: Flat)
    queries: int  # held-out queries it was measured on


# The choice of each index an `auto` build returned, for as long as the index lives (faiss's
# Python objects refuse new attributes).
_AUTO_CHOICES: weakref.WeakKeyDictionary[Any, AutoChoice] = weakref.WeakKeyDictionary()


def parse_auto(factory: str) -> float | None:
    """The recall target of an `auto` / `auto:0.99` factory string, or None for any other."""
    head, _, target = factory.strip().partition(":")
    if head.lower() != AUTO:
        return None
    try:
        value = float(target) if target else DEFAULT_RECALL
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise FactoryError(f"{factory!r}: the recall target after 'auto:' must be in (0, 1]")
    return value


def auto_factory(n: int, dimension: int) -> str:
    """The factory `auto` builds for `n` vectors (chosen on benchmarks/results/scale.json):

    - up to FLAT_MAX: Flat (exact);
    - above: IVF with about sqrt(n) lists (at least 39 training vectors each) and 8-bit scalar
      quantisation, 2 KB a vector: at 1M vectors shaped like the real embeddings, recall@10
      0.978 at nprobe 16 in 2.9 ms a query. Smaller codes lose the neighbours there: a PCA
      to 512 dimensions first (PCAR512: 0.46 at any nprobe) and OPQ64 + PQ64 (0.725 at 100k,
      refining PQ's top 10). HNSW32 finds them (0.98 at efSearch 32) but takes 8.5 KB a
      vector and minutes per million to build, and cannot remove vectors.
    """
    if n <= FLAT_MAX:
        return "Flat"
    nlist = 1 << max(4, round(np.log2(np.sqrt(n))))
    while nlist > 16 and 39 * nlist > n:
        nlist //= 2
    return f"IVF{nlist},SQ8"


def outgrown(factory: str, n: int) -> bool:
    """Whether an index built as `factory` holds too many vectors (`n`) for what `auto` would
    build now: an exact Flat index past FLAT_MAX. `auto` given again on such an index chooses
    anew (an approximate index keeps its factory: its lists still serve a growing archive)."""
    return factory.strip().lower() == "flat" and n > FLAT_MAX


def tune_search_params(
    index: Any,
    vectors: np.ndarray,
    target: float = DEFAULT_RECALL,
    queries: int = TUNE_QUERIES,
    seed: int = 0,
) -> tuple[str, float]:
    """The cheapest nprobe (IVF) or efSearch (HNSW) whose recall@10 meets `target`, and that
    recall; ("", 1.0) for an exact index. As autofaiss does: queries are a seeded sample of
    the index's own `vectors` (the ones it holds), each query's own row left out of both the
    exact and the approximate neighbours. Where no setting meets the target, the largest
    tried and its recall."""
    import faiss

    base = faiss.downcast_index(index.index) if hasattr(index, "id_map") else index
    ivf = faiss.try_extract_index_ivf(base)
    if ivf is not None:
        name, values = "nprobe", [v for v in (1 << i for i in range(16)) if v <= ivf.nlist]
    elif "HNSW" in type(faiss.downcast_index(base)).__name__:
        name, values = "efSearch", [16, 32, 64, 128, 256, 512, 1024]
    else:
        return "", 1.0
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(len(vectors), size=min(queries, len(vectors)), replace=False))
    xq = vectors[picked]
    _, exact = faiss.knn(xq, vectors, TUNE_K + 1, metric=faiss.METRIC_INNER_PRODUCT)
    all_ids = faiss_ids(index) if hasattr(index, "id_map") else np.arange(len(vectors))
    own = all_ids[picked]
    truth = [_without(all_ids[row], q, TUNE_K) for row, q in zip(exact, own, strict=True)]
    space = faiss.ParameterSpace()
    params, recall = "", 0.0
    for value in values:
        params = f"{name}={value}"
        space.set_index_parameters(index, params)
        _, found = index.search(xq, TUNE_K + 1)
        hits = [
            len(t & _without(row, q, TUNE_K)) / max(len(t), 1)
            for t, row, q in zip(truth, found, own, strict=True)
        ]
        recall = float(np.mean(hits))
        if recall >= target:
            break
    return params, recall


def _without(ids: np.ndarray, own: int, k: int) -> set[int]:
    """The first k ids of a result row other than `own` (and the -1 of missing results)."""
    return set([int(i) for i in ids if i != own and i >= 0][:k])


def auto_choice(index: Any) -> AutoChoice | None:
    """The `AutoChoice` an `auto` build made (None for an index built from a factory string)."""
    return _AUTO_CHOICES.get(index)


def new_base_index(factory: str, dimension: int) -> Any:
    """An empty FAISS index for `factory` with the inner-product metric (not yet wrapped).

    Polysemous training of PQ codes is switched off: the factory turns it on for `PQ` and
    `IVF...,PQ` indexes, yet it only serves Hamming pre-filtering (`polysemous_ht`), which
    karyosearch never uses, and it costs about 25 s per PQ index however few the vectors.
    """
    import faiss

    factory = _check_factory_string(factory)
    if parse_auto(factory) is not None:
        factory = DEFAULT_FACTORY  # checked here; the factory is chosen when built (build_faiss)
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

    if parse_auto(factory) is not None:
        return  # auto picks what `n` vectors can train
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
    """Search parameters that keep recall high: those `auto` tuned, else nprobe for IVF,
    efSearch for HNSW."""
    import faiss

    chosen = auto_choice(index)
    if chosen is not None:
        return chosen.search_params

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
    """A new IDMap2 index over `factory` holding `vectors` under `ids`, trained on them.

    For `auto[:target]` the factory is `auto_factory(len(vectors))` and the search parameters
    are tuned for the target (`tune_search_params`), applied, and kept on the index
    (`auto_choice`): `default_search_params` returns them.
    """
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    dimension = vectors.shape[1]
    target = parse_auto(factory)
    if target is not None:
        chosen = auto_factory(len(vectors), dimension)
        index = build_faiss(chosen, vectors, ids)
        params, recall = tune_search_params(index, vectors, target)
        apply_search_params(index, params)
        queries = min(TUNE_QUERIES, len(vectors)) if params else 0
        _AUTO_CHOICES[index] = AutoChoice(chosen, params, target, recall, queries)
        return index
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
