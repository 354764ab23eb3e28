"""The index folder: immutable segments and a small manifest (the card) swapped in atomically.

```
indexes/default/                       format karyosearch-index/2
    card.json                  the manifest: model fingerprint, arch, image size, preprocess
                               version, count, dimension, factory string, search parameters,
                               created/updated times, `generation` (+1 per write) and the
                               segments of this generation
    seg-000007-1a2b.faiss      a segment's FAISS IndexIDMap2 (inner product)   } written once,
    seg-000007-1a2b.h5         its HDF5 rows, the same int64 ids (store.py)    } never changed
    seg-000007-1a2b.del-000009.npy   ids of that segment deleted as of generation 9
    template-000001-3c4d.faiss the trained, empty index new segments start from (IVF, PQ)
```

A write (a cell added, files removed or relabelled) adds one segment holding only the new
rows and, for removed or replaced rows, a new tombstone file for the segments they live in;
then it writes the manifest to a temporary file, fsyncs it, renames it over card.json and
fsyncs the folder. Nothing that an earlier manifest names is ever modified, so a crash at any
point leaves the previous generation readable, and its cost does not grow with the archive.
Segments are merged (`merge`, `karyosearch index --merge`) on demand, and automatically
while a size tier holds `MERGE_FACTOR` small segments (never more than
`AUTO_MERGE_MAX_ROWS` rows in one automatic merge, so no write rewrites the archive).

Readers read card.json once and then the files it names; a file deleted under them (only
files that neither the current nor the previous manifest names are deleted, and only by a
writer) makes them re-read the manifest, so a reader always opens one consistent generation.
Writers take an exclusive lock file beside the folder and refuse to write over a generation
other than the one they read (the lost-update check).

Old single-file folders (karyosearch-index/1: faiss.index, store.h5, card.json) open as one
segment; the next write upgrades them in place without copying: the new manifest names the
old two files as its first segment.

Loading checks that the card, each segment's FAISS index and store agree on count, dimension,
ids and model fingerprint and refuses a mismatch with a one-line `UserError`.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..data.image import PREPROCESS_VERSIONS
from ..errors import UserError
from ..model import EMBEDDING_DIM
from ..util.runtime import timestamp
from ..version import __version__
from .faiss_index import (
    DEFAULT_FACTORY,
    apply_search_params,
    faiss_ids,
)
from .lock import FileLock, LockBusy, collect_garbage
from .store import Rows, StoreError, read_embeddings, read_store

INDEX_FORMAT = "karyosearch-index/2"
LEGACY_FORMAT = "karyosearch-index/1"
FAISS_FILE = "faiss.index"  # the single FAISS file of a karyosearch-index/1 folder
STORE_FILE = "store.h5"  # the single store of a karyosearch-index/1 folder
CARD_FILE = "card.json"
DEFAULT_INDEX_DIR = Path("indexes/default")
MERGE_FACTOR = 10  # an automatic merge joins this many segments of one size tier
AUTO_MERGE_MAX_ROWS = 50_000  # larger merges only on demand (`merge`, `index --merge`)


class IndexFolderError(UserError):
    """A missing, unreadable or inconsistent index folder."""


class IndexNotFoundError(IndexFolderError):
    """No index at the given folder."""


class ModelMismatchError(UserError):
    """The index was built with another model than the one offered."""


class NonFiniteIndexError(IndexFolderError):
    """The index holds NaN or infinite vectors (written by a broken model)."""


class WriteConflictError(IndexFolderError):
    """Another process wrote the index since this one read it."""


class IndexWriteError(UserError):
    """An OSError (a full disk, a read-only folder) while writing a generation."""


@dataclass
class IndexCard:
    """What an index was built with and what it holds; card.json, checked on every load."""

    model_fingerprint: str  # weights_fingerprint of the encoder that made the vectors
    arch: str  # encoder architecture (resnext, proxy-resnext, proxy-resnext-cbam)
    image_size: int  # side S of the prepared images in px
    preprocess_version: int  # the encoder's data.image preprocessing: how crops were made
    dimension: int = EMBEDDING_DIM  # embedding dimension D
    factory: str = DEFAULT_FACTORY  # FAISS factory string, wrapped in IDMap2
    count: int = 0  # live vectors in the index (= live rows in the store)
    next_id: int = 0  # the next id to hand out: ids are never reused
    model_path: str = ""  # absolute path of the checkpoint, used by `query` to embed
    search_params: str = ""  # FAISS ParameterSpace string applied on load, e.g. "nprobe=16"
    metric: str = "inner_product"  # cosine on unit vectors
    created: str = field(default_factory=timestamp)
    updated: str = field(default_factory=timestamp)
    karyosearch_version: str = __version__
    format: str = INDEX_FORMAT
    generation: int = 0  # +1 on every write; the lost-update check compares it
    # one dict per segment: name, faiss, store (file names), count (vectors in the files),
    # deleted (tombstone file, '' when none), n_deleted, finite (vectors checked finite)
    segments: list[dict[str, Any]] = field(default_factory=list)
    template: str = ""  # trained empty FAISS index new segments start from ('' untrained types)
    # the archive call's setting this index chose on its own crops (`search.archive.choose`);
    # {} until it has chosen: the fixed setting (`model.predict.ArchiveSetting`)
    archive: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> IndexCard:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})

    def files(self) -> set[str]:
        """The file names this generation reads."""
        names = {self.template} if self.template else set()
        for s in self.segments:
            names |= {s["faiss"], s["store"]} | ({s["deleted"]} if s.get("deleted") else set())
        return names


def check_encoder(card: IndexCard, encoder: Any, path: str | os.PathLike) -> None:
    """Refuse (ModelMismatchError) an encoder other than the one that built the index at
    `path`: its weights fingerprint, and the architecture, image size and preprocessing
    version its card records."""
    offered = getattr(encoder, "fingerprint", "")
    if offered != card.model_fingerprint:
        raise ModelMismatchError(
            f"{path} was built with model {card.model_fingerprint}, this checkpoint is "
            f"{offered}; use the model that built it, another --index folder, or move the "
            f"index to this model (`karyosearch index --rebuild --index {path} --model CKPT`)"
        )
    cfg = encoder.cfg
    differ = [
        f"{name} {recorded!r} (the model: {actual!r})"
        for name, recorded, actual in (
            ("arch", card.arch, cfg.arch),
            ("image size", card.image_size, cfg.image_size),
            ("preprocessing version", card.preprocess_version, cfg.preprocess_version),
        )
        if recorded != actual
    ]
    if differ:
        raise ModelMismatchError(
            f"{path}: its card records {'; '.join(differ)} for model {offered}; rebuild the "
            f"index (`karyosearch index DATA --model CKPT --index {path}`)"
        )


@dataclass
class Segment:
    """One immutable segment in memory: its FAISS index, all its rows and its tombstones."""

    info: dict[str, Any]  # the manifest entry
    index: Any  # FAISS IndexIDMap2; None when read for a write (with_faiss=False)
    rows: Rows  # every row of the segment's store, deleted ones too
    deleted: np.ndarray  # sorted int64 ids deleted from this segment

    @property
    def name(self) -> str:
        return str(self.info["name"])

    @property
    def live(self) -> np.ndarray:
        """Positions of the rows not deleted."""
        return np.flatnonzero(~np.isin(self.rows.ids, self.deleted))


@dataclass
class IndexFolder:
    """One generation of an index in memory: its card, segments and live rows."""

    path: Path
    card: IndexCard
    segments: list[Segment]
    rows: Rows  # the live rows of every segment, sorted by id (embeddings optional)

    def __len__(self) -> int:
        return len(self.rows)

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Inner products and ids of the k nearest live vectors (ids -1 past the end)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.card.dimension:
            raise UserError(
                f"query vectors of shape {vectors.shape}; expected (n, {self.card.dimension})"
            )
        parts_s, parts_i = [], []
        for seg in self.segments:
            n = min(k + len(seg.deleted), seg.index.ntotal)
            if n <= 0:
                continue
            sims, ids = seg.index.search(vectors, n)
            if len(seg.deleted):
                gone = np.isin(ids, seg.deleted)
                ids = np.where(gone, -1, ids)
                sims = np.where(gone, -np.inf, sims)
            parts_s.append(sims)
            parts_i.append(ids)
        if not parts_s:
            return np.full((len(vectors), k), -np.inf, np.float32), np.full(
                (len(vectors), k), -1, np.int64
            )
        sims, ids = np.concatenate(parts_s, axis=1), np.concatenate(parts_i, axis=1)
        valid = ids >= 0
        if not np.isfinite(sims[valid]).all():
            raise non_finite_error(self.path)
        sims = np.where(valid, sims, -np.inf)
        order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        sims, ids = np.take_along_axis(sims, order, 1), np.take_along_axis(ids, order, 1)
        if sims.shape[1] < k:
            pad = k - sims.shape[1]
            sims = np.pad(sims, ((0, 0), (0, pad)), constant_values=-np.inf)
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        return sims.astype(np.float32), ids

    def embeddings_of(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of live `ids` (read from the segments' stores)."""
        ids = np.asarray(ids, np.int64)
        out = np.zeros((len(ids), self.card.dimension), np.float32)
        for seg in self.segments:
            pos = seg.rows.positions(ids)
            hit = (pos >= 0) & ~np.isin(ids, seg.deleted)
            if hit.any():
                order = np.argsort(pos[hit])
                where = np.flatnonzero(hit)[order]
                store = self.path / seg.info["store"]
                if hit.sum() * 4 > len(seg.rows):  # most of it: one read beats a selection
                    out[where] = read_embeddings(store)[pos[hit][order]]
                else:
                    out[where] = read_embeddings(store, pos[hit][order])
        return out

    def template(self) -> Any:
        """A trained, empty FAISS index for new segments (None for untrained index types)."""
        import faiss

        if not self.card.template:
            return None
        return faiss.read_index(str(self.path / self.card.template))


def non_finite_error(path: Path, n: int | None = None) -> NonFiniteIndexError:
    what = f"{n} non-finite vectors" if n else "non-finite vectors"
    return NonFiniteIndexError(
        f"{path}: the index holds {what} (NaN or inf, from a broken model); mend it with "
        f"`karyosearch index --rebuild --index {path} --model CKPT`"
    )


def is_index_folder(path: str | os.PathLike) -> bool:
    return (Path(path) / CARD_FILE).is_file()


def read_card(path: Path) -> IndexCard:
    card_file = path / CARD_FILE
    try:
        text = card_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        if path.is_dir() and any(path.iterdir()):
            raise IndexFolderError(f"{path}: not a karyosearch index (no {CARD_FILE})") from None
        raise IndexNotFoundError(
            f"{path}: no index here; build one with "
            f"`karyosearch index DATA --model CKPT --index {path}`"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise IndexFolderError(f"{card_file}: unreadable index card ({err})") from None
    try:
        card = IndexCard.from_dict(json.loads(text))
    except (ValueError, TypeError) as err:
        raise IndexFolderError(f"{card_file}: unreadable index card ({err})") from None
    if card.format == LEGACY_FORMAT:  # one segment: the folder's two files
        card.segments = [
            {"name": "legacy", "faiss": FAISS_FILE, "store": STORE_FILE, "count": card.count}
        ]
    elif card.format != INDEX_FORMAT:
        raise IndexFolderError(f"{path}: index format {card.format!r}, expected {INDEX_FORMAT!r}")
    return card


class _Vanished(Exception):
    """A file of the generation being read was deleted meanwhile (a writer merged)."""


def read_index_folder(
    path: str | os.PathLike,
    fingerprint: str | None = None,
    embeddings: bool = False,
    allow_non_finite: bool = False,
    with_faiss: bool = True,
) -> IndexFolder:
    """Load the current generation of an index folder and check that it is consistent.

    With `fingerprint`, refuse (ModelMismatchError) an index built by another model. The
    stores' embeddings are read only when `embeddings` is true. An index holding non-finite
    vectors is refused (NonFiniteIndexError) unless `allow_non_finite` (for `--rebuild`).
    Writers pass `with_faiss=False`: the FAISS files are left unread (the segments' `index`
    is None, the folder cannot search), so planning a write reads only the rows' metadata.
    """
    path = Path(path)
    _wait_for_swap(path)
    for _ in range(50):
        card = read_card(path)
        try:
            return _open_generation(
                path, card, fingerprint, embeddings, allow_non_finite, with_faiss
            )
        except _Vanished as gone:
            if read_card(path).generation == card.generation:  # not a writer: really missing
                raise IndexFolderError(f"{gone}: missing index file; rebuild the index") from None
    raise IndexFolderError(f"{path}: the index changes faster than it can be read; try again")


def _open_generation(
    path: Path,
    card: IndexCard,
    fingerprint: str | None,
    embeddings: bool,
    allow_non_finite: bool,
    with_faiss: bool = True,
) -> IndexFolder:
    import faiss

    if card.preprocess_version not in PREPROCESS_VERSIONS:
        raise IndexFolderError(
            f"{path}: its vectors were made from images prepared with v{card.preprocess_version}, "
            f"this karyosearch prepares v{', v'.join(map(str, PREPROCESS_VERSIONS))} only; "
            "rebuild the index"
        )
    if fingerprint is not None and fingerprint != card.model_fingerprint:
        raise ModelMismatchError(
            f"{path} was built with model {card.model_fingerprint}, not {fingerprint}; query with "
            "the model that built it or index into another folder (--index)"
        )
    segments, problems, non_finite = [], [], 0
    for info in card.segments:
        faiss_file, store_file = path / info["faiss"], path / info["store"]
        try:
            index = faiss.read_index(str(faiss_file)) if with_faiss else None
        except RuntimeError:
            if not faiss_file.exists():
                raise _Vanished(faiss_file) from None
            raise IndexFolderError(f"{faiss_file}: unreadable FAISS index") from None
        try:
            rows, attrs = read_store(store_file, embeddings=embeddings)
        except StoreError as err:
            if not store_file.exists():
                raise _Vanished(store_file) from None
            raise IndexFolderError(str(err)) from None
        deleted = np.zeros(0, np.int64)
        if info.get("deleted"):
            try:
                deleted = np.sort(np.load(path / info["deleted"]).astype(np.int64))
            except FileNotFoundError:
                raise _Vanished(path / info["deleted"]) from None
            except (OSError, ValueError) as err:
                raise IndexFolderError(f"{path / info['deleted']}: unreadable ({err})") from None
        name = info.get("name", "?")
        if index is None:  # a writer's read: the manifest and the stores must agree
            if len(rows) != int(info.get("count", len(rows))):
                problems.append(f"segment {name} count: card {info['count']}, store {len(rows)}")
            if attrs.get("model_fingerprint") != card.model_fingerprint:
                problems.append(
                    f"model: card {card.model_fingerprint}, store {attrs.get('model_fingerprint')}"
                )
            seg = Segment(info, None, rows, deleted)
            if not problems and not info.get("finite"):
                non_finite += _count_non_finite(path, seg)
            segments.append(seg)
            continue
        if not hasattr(index, "id_map"):
            problems.append(f"segment {name}: the FAISS index has no id map")
        if index.d != card.dimension or int(attrs.get("dimension", -1)) != card.dimension:
            problems.append(
                f"dimension: card {card.dimension}, FAISS {index.d}, store {attrs.get('dimension')}"
            )
        if not (index.ntotal == len(rows) == int(info.get("count", -1))):
            if card.format != LEGACY_FORMAT:
                problems.append(
                    f"segment {name} count: card {info.get('count')}, FAISS {index.ntotal}, "
                    f"store {len(rows)}"
                )
        if attrs.get("model_fingerprint") != card.model_fingerprint:
            problems.append(
                f"model: card {card.model_fingerprint}, store {attrs.get('model_fingerprint')}"
            )
        if (
            not problems
            and hasattr(index, "id_map")
            and not np.array_equal(np.sort(faiss_ids(index)), rows.ids)
        ):
            problems.append("the FAISS ids differ from the store's ids")
        if not problems:
            apply_search_params(index, card.search_params)
            seg = Segment(info, index, rows, deleted)
            if not info.get("finite"):
                non_finite += _count_non_finite(path, seg)
            segments.append(seg)
    live: list[Rows] = []
    if not problems:
        live = [s.rows.take(s.live) for s in segments]
        n_live = sum(len(r) for r in live)
        n_faiss = sum(
            (s.index.ntotal if s.index is not None else len(s.rows)) - len(s.deleted)
            for s in segments
        )
        if not (n_faiss == n_live == card.count):
            problems.append(f"count: card {card.count}, FAISS {n_faiss}, store {n_live}")
    if problems:
        raise IndexFolderError(f"{path}: inconsistent index ({'; '.join(problems)}); rebuild it")
    if non_finite and not allow_non_finite:
        raise non_finite_error(path, non_finite)
    try:
        rows = Rows.concat(live) if live else Rows.empty(card.dimension if embeddings else 0)
    except ValueError as err:  # an id live in two segments
        raise IndexFolderError(f"{path}: inconsistent index ({err}); rebuild it") from None
    return IndexFolder(path, card, segments, rows)


def _count_non_finite(path: Path, seg: Segment) -> int:
    """Non-finite vectors of a segment written before writers checked (karyosearch-index/1)."""
    if seg.rows.embeddings.shape[1]:
        vectors = seg.rows.embeddings
    else:
        vectors = read_embeddings(path / seg.info["store"])
    return int((~np.isfinite(vectors).all(axis=1)).sum())


def _backups(path: Path) -> list[Path]:
    found = path.parent.glob(f".{glob.escape(path.name)}.old-*")
    return sorted(found, key=lambda p: p.stat().st_mtime)


def recover(path: str | os.PathLike) -> None:
    """Under the writer lock: finish a folder swap that a dead process left half done (put
    the backup back: karyosearch-index/1 swapped whole folders), delete the temporary folders
    of interrupted first builds and the files no manifest names (interrupted writes)."""
    path = Path(path)
    if not path.exists():
        backups = [b for b in _backups(path) if (b / CARD_FILE).is_file()]
        if backups:
            os.replace(backups[-1], path)
    for leftover in [*path.parent.glob(f".{glob.escape(path.name)}.tmp-*"), *_backups(path)]:
        shutil.rmtree(leftover, ignore_errors=True)
    if is_index_folder(path):
        with contextlib.suppress(IndexFolderError):
            collect_garbage(path, {CARD_FILE} | read_card(path).files())


def _wait_for_swap(path: Path, seconds: float = 1.0) -> None:
    """For readers of a folder a karyosearch-index/1 writer is swapping whole: a missing
    folder with a backup beside it is a swap in progress; wait, then recover."""
    if path.exists() or not _backups(path):
        return
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.02)
        if path.exists():
            return
    with writer_lock(path):  # recovers; refused while a live writer holds the lock
        pass


@contextlib.contextmanager
def writer_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold the exclusive writer lock of an index folder (`lock.FileLock`) and recover what a
    dead writer left; refuses (IndexFolderError) while another process writes."""
    path = Path(path)
    lock = FileLock(path)
    try:
        lock.acquire()
    except LockBusy:
        raise IndexFolderError(
            f"{path}: another karyosearch process is writing this index"
        ) from None
    except OSError as err:
        raise IndexWriteError(
            f"cannot create {lock.file} ({err.strerror or err}); nothing was written"
        ) from None
    try:
        recover(path)
        yield
    finally:
        lock.release()
