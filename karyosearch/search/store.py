"""The HDF5 store: one row per indexed image, keyed by the same int64 ids as the FAISS index.

Schema (`karyosearch-store/1`), all datasets at the root of the file, N rows, D = 2048
(`model.EMBEDDING_DIM`):

| dataset       | dtype, shape      | meaning                                                 |
|---------------|-------------------|---------------------------------------------------------|
| `ids`         | int64 (N,)        | the FAISS ids, unique and ascending                     |
| `embeddings`  | float32 (N, D)    | unit embeddings (what the FAISS index was built from)   |
| `labels`      | int8 (N,)         | class index 0..23 into attr `class_names`; -1 unknown   |
| `paths`       | utf-8 string (N,) | absolute path of the image file                         |
| `cell_ids`    | utf-8 string (N,) | the metaphase the crop was cut from; '' when unknown    |
| `patient_ids` | utf-8 string (N,) | the patient; '' when unknown                            |
| `sha1`        | bytes S40 (N,)    | hex SHA-1 of the file's bytes when it was embedded      |
| `class_sums`  | float64 (C, D)    | sum of the embeddings of each class (C = 24; optional)  |
| `class_counts`| int64 (C,)        | rows of each class (optional; with `class_sums`)        |

File attributes: `format` ("karyosearch-store/1"), `count` (N), `dimension` (D),
`class_names` (JSON list, "1".."22", "X", "Y") and whatever the caller adds (the index adds
`model_fingerprint`). Rows are kept sorted by id, so a row is found with a binary search.

`class_sums` and `class_counts` give the archive's class means (`search.archive`) without
reading every vector; a store written before they existed is summed from its embeddings.

The store holds every vector, so the FAISS index can always be rebuilt from it (a new
factory string, or an index type that cannot remove vectors).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..labels import CLASS_NAMES
from ..model import EMBEDDING_DIM
from ..util.regular import open_regular

STORE_FORMAT = "karyosearch-store/1"
STRING_COLUMNS: tuple[str, ...] = ("paths", "cell_ids", "patient_ids", "sha1")


class StoreError(UserError):
    """An HDF5 file that is not a readable karyosearch store."""


@dataclass
class Rows:
    """Columns of the store, one entry per indexed image, sorted by id."""

    ids: np.ndarray  # (N,) int64, unique, ascending; identical to the FAISS ids
    embeddings: np.ndarray  # (N, D) float32 unit vectors
    labels: np.ndarray  # (N,) int8 class index 0..23, -1 when unknown
    paths: list[str]  # absolute image paths
    cell_ids: list[str]  # '' when unknown
    patient_ids: list[str]  # '' when unknown
    sha1: list[str]  # hex SHA-1 of the file bytes that were embedded

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids, dtype=np.int64).reshape(-1)
        self.embeddings = np.asarray(self.embeddings, dtype=np.float32)
        self.labels = np.asarray(self.labels, dtype=np.int8).reshape(-1)
        n = len(self.ids)
        if self.embeddings.ndim != 2 or self.embeddings.shape[0] != n:
            raise ValueError(f"embeddings of shape {self.embeddings.shape} for {n} ids")
        for name in ("labels", *STRING_COLUMNS):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {n} ids")
        if n > 1 and not np.all(np.diff(self.ids) > 0):
            raise ValueError("ids must be unique and ascending")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dimension(self) -> int:
        return int(self.embeddings.shape[1])

    @classmethod
    def empty(cls, dimension: int = EMBEDDING_DIM) -> Rows:
        return cls(
            np.zeros(0, np.int64),
            np.zeros((0, dimension), np.float32),
            np.zeros(0, np.int8),
            [],
            [],
            [],
            [],
        )

    def take(self, index: np.ndarray | Sequence[int]) -> Rows:
        """The rows at positions `index` (ascending positions keep the id order)."""
        idx = np.asarray(index, dtype=np.int64).reshape(-1)
        return Rows(
            self.ids[idx],
            self.embeddings[idx],
            self.labels[idx],
            *([getattr(self, c)[i] for i in idx] for c in STRING_COLUMNS),
        )

    def positions(self, ids: np.ndarray | Sequence[int]) -> np.ndarray:
        """Row positions of `ids`; -1 where an id is not stored."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if not len(self.ids):
            return np.full(len(ids), -1, np.int64)
        pos = np.clip(np.searchsorted(self.ids, ids), 0, len(self.ids) - 1)
        return np.where(self.ids[pos] == ids, pos, -1)

    @staticmethod
    def concat(parts: Sequence[Rows]) -> Rows:
        """Rows of several blocks together, sorted by id (ids must not repeat)."""
        parts = [p for p in parts if len(p)] or list(parts[:1])
        if not parts:
            return Rows.empty()
        ids = np.concatenate([p.ids for p in parts])
        order = np.argsort(ids, kind="stable")
        strings = {c: [s for p in parts for s in getattr(p, c)] for c in STRING_COLUMNS}
        return Rows(
            ids[order],
            np.concatenate([p.embeddings for p in parts])[order],
            np.concatenate([p.labels for p in parts])[order],
            **{c: [values[i] for i in order] for c, values in strings.items()},
        )


def file_sha1(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-1 of a file's bytes: tells a changed image from an unchanged one."""
    digest = hashlib.sha1(usedforsecurity=False)
    # only a regular file is opened (a FIFO would block here forever): anything else raises
    # NotRegularFileError, an OSError whose strerror is the reason
    with open_regular(path) as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_store(path: str | os.PathLike, rows: Rows, attrs: dict[str, Any] | None = None) -> None:
    """Write `rows` to a new HDF5 file at `path` (the caller makes the write atomic)."""
    import h5py

    utf8 = h5py.string_dtype("utf-8")
    n, d = rows.embeddings.shape
    with h5py.File(path, "w") as f:
        f.create_dataset("ids", data=rows.ids, dtype=np.int64)
        chunks = (min(max(n, 1), max(1, (1 << 20) // (4 * d))), d)
        f.create_dataset(
            "embeddings",
            data=rows.embeddings,
            dtype=np.float32,
            chunks=chunks if n else None,
            maxshape=(None, d),
        )
        f.create_dataset("labels", data=rows.labels, dtype=np.int8)
        for column in ("paths", "cell_ids", "patient_ids"):
            f.create_dataset(column, data=np.array(getattr(rows, column), dtype=object), dtype=utf8)
        f.create_dataset("sha1", data=np.array(rows.sha1, dtype="S40"))
        sums, counts = sum_classes(rows.embeddings, rows.labels)
        f.create_dataset("class_sums", data=sums, dtype=np.float64)
        f.create_dataset("class_counts", data=counts, dtype=np.int64)
        f.attrs["format"] = STORE_FORMAT
        f.attrs["count"] = n
        f.attrs["dimension"] = d
        f.attrs["class_names"] = json.dumps(list(CLASS_NAMES))
        for key, value in (attrs or {}).items():
            f.attrs[key] = value


def read_store(path: str | os.PathLike, embeddings: bool = True) -> tuple[Rows, dict[str, Any]]:
    """Read a store: its rows (embeddings left empty, (N, 0), unless asked for) and attributes."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{path}: no such store file")
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
            if attrs.get("format") != STORE_FORMAT:
                raise StoreError(f"{path}: not a karyosearch store (format {STORE_FORMAT})")
            ids = f["ids"][()]
            emb = f["embeddings"][()] if embeddings else np.zeros((len(ids), 0), np.float32)
            strings = {c: [s.decode("utf-8") for s in f[c][()]] for c in STRING_COLUMNS}
            rows = Rows(ids, emb, f["labels"][()], **strings)
    except StoreError:
        raise
    except (OSError, KeyError, ValueError) as err:
        raise StoreError(f"{path}: unreadable store ({err})") from None
    if int(attrs.get("count", -1)) != len(rows):
        raise StoreError(f"{path}: store says {attrs.get('count')} rows but holds {len(rows)}")
    return rows, attrs


def sum_classes(embeddings: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per class, the sum of the labelled embeddings (C, D) float64 and their count (C,)."""
    embeddings = np.asarray(embeddings, np.float64)
    labels = np.asarray(labels, np.int64)
    sums = np.zeros((len(CLASS_NAMES), embeddings.shape[1] if embeddings.ndim == 2 else 0))
    counts = np.zeros(len(CLASS_NAMES), np.int64)
    known = labels >= 0
    if known.any():
        np.add.at(sums, labels[known], embeddings[known])
        np.add.at(counts, labels[known], 1)
    return sums, counts


def read_class_sums(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """A store's per-class embedding sums and counts (`sum_classes` of all its rows), read
    from its `class_sums`/`class_counts` datasets, or summed from its embeddings when an older
    store has none."""
    import h5py

    with h5py.File(path, "r") as f:
        if "class_sums" in f and "class_counts" in f:
            return f["class_sums"][()], f["class_counts"][()]
        return sum_classes(f["embeddings"][()], f["labels"][()])


def read_embeddings(path: str | os.PathLike, positions: np.ndarray | None = None) -> np.ndarray:
    """The stored embeddings, all of them or the rows at `positions` (ascending)."""
    import h5py

    with h5py.File(path, "r") as f:
        data = f["embeddings"]
        if positions is None:
            return data[()]
        positions = np.asarray(positions, dtype=np.int64)
        if not len(positions):
            return np.zeros((0, data.shape[1]), np.float32)
        return data[positions]
