"""The index folder: FAISS over factory strings with inner product, consistency checks on
load, and atomic writes that never leave a half-written index."""

from __future__ import annotations

import json
import os
from pathlib import Path

import faiss
import numpy as np
import pytest

import karyosearch.search.folder as index_mod
import karyosearch.search.segments as segments_mod
from karyosearch.search.faiss_index import (
    FactoryError,
    build_faiss,
    default_search_params,
    faiss_ids,
    update_faiss,
)
from karyosearch.search.folder import (
    CARD_FILE,
    IndexCard,
    IndexFolderError,
    IndexNotFoundError,
    IndexWriteError,
    ModelMismatchError,
    read_index_folder,
    writer_lock,
)
from karyosearch.search.segments import write_index_folder
from karyosearch.search.store import Rows

D = 64


def unit_vectors(n: int, seed: int = 0, clusters: int = 8) -> np.ndarray:
    """Clustered unit vectors (ANN indexes are meant for structured data, not uniform noise)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, D))
    x = centres[rng.integers(0, clusters, n)] + 0.5 * rng.normal(size=(n, D))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_rows(n: int, first_id: int = 0, seed: int = 0) -> Rows:
    ids = np.arange(first_id, first_id + 2 * n, 2, dtype=np.int64)  # not contiguous on purpose
    return Rows(
        ids,
        unit_vectors(n, seed),
        np.arange(n) % 24,
        [f"/d/{i}.png" for i in ids],
        [""] * n,
        [""] * n,
        ["0" * 40] * n,
    )


def card(factory: str = "Flat", fingerprint: str = "f00d") -> IndexCard:
    return IndexCard(
        model_fingerprint=fingerprint,
        arch="proxy-resnext-cbam",
        image_size=32,
        preprocess_version=1,
        dimension=D,
        factory=factory,
    )


def write(path: Path, rows: Rows, factory: str = "Flat", fingerprint: str = "f00d") -> None:
    index = build_faiss(factory, rows.embeddings, rows.ids)
    c = card(factory, fingerprint)
    c.search_params = default_search_params(index)
    write_index_folder(path, c, index, rows)


@pytest.mark.parametrize("factory", ["Flat", "HNSW16", "IVF4,Flat", "IVF4,PQ8"])
def test_factories_use_inner_product_and_find_self_first(factory: str) -> None:
    rows = make_rows(400)
    index = build_faiss(factory, rows.embeddings, rows.ids)
    assert faiss.downcast_index(index.index).metric_type == faiss.METRIC_INNER_PRODUCT
    index_mod.apply_search_params(index, default_search_params(index))
    scores, ids = index.search(rows.embeddings[:50], 5)
    hit = ids[:, 0] == rows.ids[:50]
    if "PQ" in factory:  # compressed: approximate scores, self among the top few
        assert (ids == rows.ids[:50, None]).any(axis=1).mean() >= 0.8
    else:
        assert hit.all()
        np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-4)
    assert set(faiss_ids(index)) == set(rows.ids.tolist())


def test_too_few_vectors_for_ivf_is_a_clear_error() -> None:
    rows = make_rows(10)
    with pytest.raises(FactoryError, match="64 IVF lists but only 10 vectors"):
        build_faiss("IVF64,Flat", rows.embeddings, rows.ids)


@pytest.mark.parametrize(
    "factory, message",
    [("Bogus", "no usable FAISS factory"), ("IDMap,Flat", "leave out IDMap"), ("", "empty")],
)
def test_bad_factory_strings_are_refused(factory: str, message: str) -> None:
    rows = make_rows(4)
    with pytest.raises(FactoryError, match=message):
        build_faiss(factory, rows.embeddings, rows.ids)


def test_write_then_read_checks_and_keeps_everything(tmp_path: Path) -> None:
    rows = make_rows(30)
    write(tmp_path / "idx", rows, "HNSW16")
    folder = read_index_folder(tmp_path / "idx", fingerprint="f00d")
    assert len(folder) == 30 and folder.card.count == 30 and folder.card.dimension == D
    assert folder.card.factory == "HNSW16" and folder.card.search_params == "efSearch=128"
    raw = json.loads((tmp_path / "idx" / CARD_FILE).read_text())
    for key in (
        "model_fingerprint",
        "arch",
        "image_size",
        "preprocess_version",
        "count",
        "dimension",
        "factory",
        "created",
        "updated",
        "karyosearch_version",
    ):
        assert key in raw
    np.testing.assert_array_equal(folder.rows.ids, rows.ids)
    _, ids = folder.search(rows.embeddings[:3], 1)
    np.testing.assert_array_equal(ids[:, 0], rows.ids[:3])
    assert oct(os.stat(tmp_path / "idx").st_mode & 0o777) != oct(0o700)  # not a private tmp dir


def test_load_refuses_another_model_and_inconsistent_folders(tmp_path: Path) -> None:
    write(tmp_path / "idx", make_rows(10))
    with pytest.raises(ModelMismatchError, match="built with model f00d"):
        read_index_folder(tmp_path / "idx", fingerprint="beef")
    card_file = tmp_path / "idx" / CARD_FILE
    raw = json.loads(card_file.read_text())
    card_file.write_text(json.dumps({**raw, "count": 11}))
    with pytest.raises(IndexFolderError, match="count: card 11, FAISS 10, store 10"):
        read_index_folder(tmp_path / "idx")
    card_file.write_text(json.dumps({**raw, "dimension": 32}))
    with pytest.raises(IndexFolderError, match="dimension"):
        read_index_folder(tmp_path / "idx")


def test_load_refuses_ids_that_drifted(tmp_path: Path) -> None:
    rows = make_rows(10)
    write(tmp_path / "idx", rows)
    other = build_faiss("Flat", rows.embeddings, rows.ids + 1)
    segment = json.loads((tmp_path / "idx" / CARD_FILE).read_text())["segments"][0]
    os.chmod(tmp_path / "idx" / segment["faiss"], 0o644)
    faiss.write_index(other, str(tmp_path / "idx" / segment["faiss"]))
    with pytest.raises(IndexFolderError, match="FAISS ids differ"):
        read_index_folder(tmp_path / "idx")


def test_missing_index_and_foreign_folder(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFoundError, match="no index here"):
        read_index_folder(tmp_path / "nothing")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(IndexFolderError, match="not a karyosearch index"):
        read_index_folder(tmp_path / "mine")
    rows = make_rows(3)
    with pytest.raises(IndexFolderError, match="not a karyosearch index"):
        write_index_folder(
            tmp_path / "mine", card(), build_faiss("Flat", rows.embeddings, rows.ids), rows
        )
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def test_exception_mid_write_leaves_the_old_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "idx", make_rows(10))
    before = {p.name: p.read_bytes() for p in (tmp_path / "idx").iterdir()}

    def half_then_crash(path, rows, attrs=None):  # noqa: ANN001
        Path(path).write_bytes(b"half an HDF5 file")
        raise OSError("disk full")

    monkeypatch.setattr(segments_mod, "write_store", half_then_crash)
    with pytest.raises(IndexWriteError, match="disk full writing .*; the previous index is intact"):
        write(tmp_path / "idx", make_rows(20, first_id=100))
    assert {p.name: p.read_bytes() for p in (tmp_path / "idx").iterdir()} == before
    assert len(read_index_folder(tmp_path / "idx")) == 10
    assert _leftovers(tmp_path) == []


def test_failed_swap_puts_the_old_index_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "idx", make_rows(10))
    real_replace = os.replace
    calls = []

    def second_rename_fails(src, dst):  # noqa: ANN001
        calls.append((src, dst))
        if len(calls) == 1:  # the new manifest over card.json
            raise OSError("power cut")
        return real_replace(src, dst)

    monkeypatch.setattr(segments_mod.os, "replace", second_rename_fails)
    with pytest.raises(IndexWriteError, match="power cut .*the previous index is intact"):
        write(tmp_path / "idx", make_rows(20, first_id=100))
    monkeypatch.setattr(segments_mod.os, "replace", real_replace)
    assert len(read_index_folder(tmp_path / "idx")) == 10
    assert _leftovers(tmp_path) == []


def test_a_crash_between_the_renames_is_recovered_on_load(tmp_path: Path) -> None:
    write(tmp_path / "idx", make_rows(10))
    os.replace(tmp_path / "idx", tmp_path / ".idx.old-123-abcd")  # the process died here
    assert len(read_index_folder(tmp_path / "idx")) == 10
    assert not (tmp_path / ".idx.old-123-abcd").exists()


def test_update_removes_and_adds_or_rebuilds_for_hnsw() -> None:
    for factory in ("Flat", "HNSW16"):
        rows = make_rows(20)
        index = build_faiss(factory, rows.embeddings, rows.ids)
        keep = rows.take(np.arange(5, 20))
        extra = make_rows(3, first_id=1000, seed=5)
        new_rows = Rows.concat([keep, extra])
        index = update_faiss(index, factory, new_rows, rows.ids[:5], new_rows.positions(extra.ids))
        assert sorted(faiss_ids(index).tolist()) == new_rows.ids.tolist()
        _, ids = index.search(extra.embeddings, 1)
        np.testing.assert_array_equal(ids[:, 0], extra.ids)


def test_only_one_writer_at_a_time(tmp_path: Path) -> None:
    with writer_lock(tmp_path / "idx"):
        with pytest.raises(IndexFolderError, match="another karyosearch process"):
            with writer_lock(tmp_path / "idx"):
                pass
    with writer_lock(tmp_path / "idx"):  # released
        pass


def test_the_next_writer_clears_leftovers_of_a_killed_one(tmp_path: Path) -> None:
    write(tmp_path / "idx", make_rows(5))
    (tmp_path / ".idx.tmp-99999-dead").mkdir()  # a writer killed mid-write
    (tmp_path / ".idx.tmp-99999-dead" / "store.h5").write_bytes(b"half")
    (tmp_path / ".idx.old-99999-dead").mkdir()  # killed after the swap, before the clean-up
    with writer_lock(tmp_path / "idx"):
        assert _leftovers(tmp_path) == []
    assert len(read_index_folder(tmp_path / "idx")) == 5
