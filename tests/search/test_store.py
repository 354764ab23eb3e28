"""The HDF5 store: round trip of every column, validation, helpers."""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import numpy as np
import pytest

from karyosearch.search.store import (
    Rows,
    StoreError,
    file_sha1,
    read_embeddings,
    read_store,
    write_store,
)


def make_rows(ids: list[int], d: int = 8, seed: int = 0) -> Rows:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(len(ids), d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    n = len(ids)
    return Rows(
        np.asarray(ids, np.int64),
        x,
        np.arange(n) % 24 - (np.arange(n) == 0),  # first row: -1
        [f"/data/cell é/{i}.bmp" for i in ids],
        [("c1" if i % 2 else "") for i in ids],
        [("p" if i % 3 else "") for i in ids],
        [hashlib.sha1(str(i).encode()).hexdigest() for i in ids],
    )


def test_round_trip_keeps_every_column_and_attribute(tmp_path: Path) -> None:
    rows = make_rows([3, 7, 8, 20])
    write_store(tmp_path / "s.h5", rows, {"model_fingerprint": "abc"})
    back, attrs = read_store(tmp_path / "s.h5")
    assert back.ids.dtype == np.int64 and back.labels.dtype == np.int8
    np.testing.assert_array_equal(back.ids, rows.ids)
    np.testing.assert_array_equal(back.embeddings, rows.embeddings)
    np.testing.assert_array_equal(back.labels, rows.labels)
    assert back.labels[0] == -1
    for column in ("paths", "cell_ids", "patient_ids", "sha1"):
        assert getattr(back, column) == getattr(rows, column)
    assert attrs["model_fingerprint"] == "abc"
    assert attrs["count"] == 4 and attrs["dimension"] == 8
    assert attrs["format"] == "karyosearch-store/1"
    with h5py.File(tmp_path / "s.h5") as f:
        assert f["embeddings"].dtype == np.float32 and f["embeddings"].shape == (4, 8)


def test_metadata_only_read_and_row_reads(tmp_path: Path) -> None:
    rows = make_rows([1, 2, 3])
    write_store(tmp_path / "s.h5", rows)
    meta, _ = read_store(tmp_path / "s.h5", embeddings=False)
    assert meta.embeddings.shape == (3, 0) and meta.paths == rows.paths
    np.testing.assert_array_equal(
        read_embeddings(tmp_path / "s.h5", np.array([0, 2])), rows.embeddings[[0, 2]]
    )


def test_empty_store_round_trips(tmp_path: Path) -> None:
    write_store(tmp_path / "s.h5", Rows.empty(16))
    back, attrs = read_store(tmp_path / "s.h5")
    assert len(back) == 0 and back.embeddings.shape == (0, 16) and attrs["count"] == 0


def test_rows_validate_ids_and_lengths() -> None:
    good = make_rows([1, 2])
    with pytest.raises(ValueError, match="ascending"):
        Rows(
            np.array([2, 1]),
            good.embeddings,
            good.labels,
            good.paths,
            good.cell_ids,
            good.patient_ids,
            good.sha1,
        )
    with pytest.raises(ValueError, match="paths"):
        Rows(
            good.ids,
            good.embeddings,
            good.labels,
            good.paths[:1],
            good.cell_ids,
            good.patient_ids,
            good.sha1,
        )


def test_concat_take_and_positions() -> None:
    a, b = make_rows([1, 5]), make_rows([3, 9], seed=1)
    joined = Rows.concat([a, b])
    np.testing.assert_array_equal(joined.ids, [1, 3, 5, 9])
    assert joined.paths[1] == b.paths[0]
    np.testing.assert_array_equal(joined.embeddings[1], b.embeddings[0])
    np.testing.assert_array_equal(joined.positions([9, 4, 1]), [3, -1, 0])
    assert joined.take([0, 3]).paths == [a.paths[0], b.paths[1]]
    assert len(Rows.concat([Rows.empty(8), a])) == 2


def test_file_sha1_follows_content(tmp_path: Path) -> None:
    f = tmp_path / "x.bin"
    f.write_bytes(b"abc")
    assert file_sha1(f) == hashlib.sha1(b"abc").hexdigest()
    f.write_bytes(b"abd")
    assert file_sha1(f) == hashlib.sha1(b"abd").hexdigest()


def test_not_a_store_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no such store"):
        read_store(tmp_path / "missing.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = [1]
    with pytest.raises(StoreError, match="not a karyosearch store"):
        read_store(tmp_path / "other.h5")
    (tmp_path / "junk.h5").write_bytes(b"junk")
    with pytest.raises(StoreError, match="unreadable"):
        read_store(tmp_path / "junk.h5")


def test_file_sha1_refuses_a_fifo_at_once(tmp_path: Path) -> None:
    import os

    from karyosearch.util.regular import NotRegularFileError

    from ..conftest import without_hanging

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(NotRegularFileError, match="named pipe") as err:
        without_hanging(lambda: file_sha1(fifo), [fifo])
    assert isinstance(err.value, OSError) and "named pipe" in err.value.strerror
