"""The index folder: a FAISS index, the HDF5 store and a JSON card, written atomically.

```
indexes/default/
    faiss.index   FAISS IndexIDMap2 over any factory string, inner-product metric
    store.h5      vectors and metadata, the same int64 ids (see search/store.py)
    card.json     model fingerprint, arch, image size, preprocess version, count,
                  dimension, factory string, search parameters, created/updated times
```

Loading checks that the card, the FAISS index and the store agree on count, dimension and
ids, and (when asked) that the model fingerprint is the caller's, and refuses a mismatch with
a one-line `UserError` (clip-retrieval users got unrelated results when metadata drifted from
the index). Writing builds the complete new folder in a temporary sibling directory, then
swaps it in with two renames (old -> backup, new -> target; the backup is renamed back if the
second rename fails, and restored on the next load if the process died in between), so a crash
at any point leaves the previous index intact. Writers take an exclusive lock file beside the
folder.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..data.image import PREPROCESS_VERSION
from ..errors import UserError
from ..model import EMBEDDING_DIM
from ..util.runtime import timestamp
from ..version import __version__
from .faiss_index import DEFAULT_FACTORY, apply_search_params, faiss_ids
from .store import Rows, StoreError, read_store, write_store

INDEX_FORMAT = "karyosearch-index/1"
FAISS_FILE = "faiss.index"
STORE_FILE = "store.h5"
CARD_FILE = "card.json"
DEFAULT_INDEX_DIR = Path("indexes/default")


class IndexFolderError(UserError):
    """A missing, unreadable or inconsistent index folder."""


class IndexNotFoundError(IndexFolderError):
    """No index at the given folder."""


class ModelMismatchError(UserError):
    """The index was built with another model than the one offered."""


@dataclass
class IndexCard:
    """What an index was built with; card.json, checked on every load."""

    model_fingerprint: str  # weights_fingerprint of the encoder that made the vectors
    arch: str  # encoder architecture (resnext, proxy-resnext, proxy-resnext-cbam)
    image_size: int  # side S of the prepared images in px
    preprocess_version: int  # image.PREPROCESS_VERSION the vectors were made with
    dimension: int = EMBEDDING_DIM  # embedding dimension D
    factory: str = DEFAULT_FACTORY  # FAISS factory string, wrapped in IDMap2
    count: int = 0  # vectors in the index (= rows in the store)
    next_id: int = 0  # the next id to hand out: ids are never reused
    model_path: str = ""  # absolute path of the checkpoint, used by `query` to embed
    search_params: str = ""  # FAISS ParameterSpace string applied on load, e.g. "nprobe=16"
    metric: str = "inner_product"  # cosine on unit vectors
    created: str = field(default_factory=timestamp)
    updated: str = field(default_factory=timestamp)
    karyosearch_version: str = __version__
    format: str = INDEX_FORMAT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> IndexCard:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})


def check_encoder(card: IndexCard, encoder: Any, path: str | os.PathLike) -> None:
    """Refuse (ModelMismatchError) an encoder other than the one that built the index at
    `path`: its weights fingerprint, and the architecture, image size and preprocessing
    version its card records."""
    offered = getattr(encoder, "fingerprint", "")
    if offered != card.model_fingerprint:
        raise ModelMismatchError(
            f"{path} was built with model {card.model_fingerprint}, this checkpoint is "
            f"{offered}; use the model that built it or another --index folder"
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
class IndexFolder:
    """An index in memory: its card, FAISS index and store rows (embeddings optional)."""

    path: Path
    card: IndexCard
    faiss_index: Any
    rows: Rows

    def __len__(self) -> int:
        return len(self.rows)

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Inner products and ids of the k nearest stored vectors (ids -1 past the end)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.card.dimension:
            raise UserError(
                f"query vectors of shape {vectors.shape}; expected (n, {self.card.dimension})"
            )
        return self.faiss_index.search(vectors, k)


def is_index_folder(path: str | os.PathLike) -> bool:
    return (Path(path) / CARD_FILE).is_file()


def _backups(path: Path) -> list[Path]:
    found = path.parent.glob(f".{glob.escape(path.name)}.old-*")
    return sorted(found, key=lambda p: p.stat().st_mtime)


def recover(path: str | os.PathLike) -> None:
    """Under the writer lock: finish a swap that a dead process left half done (put the
    backup back in place) and delete the temporary folders of interrupted writes."""
    path = Path(path)
    if not path.exists():
        backups = [b for b in _backups(path) if (b / CARD_FILE).is_file()]
        if backups:
            os.replace(backups[-1], path)
    for leftover in [*path.parent.glob(f".{glob.escape(path.name)}.tmp-*"), *_backups(path)]:
        shutil.rmtree(leftover, ignore_errors=True)


def _wait_for_swap(path: Path, seconds: float = 1.0) -> None:
    """For readers: a missing folder with a backup beside it is a swap in progress (two
    renames, microseconds apart) or a writer that died between them; wait, then recover."""
    if path.exists() or not _backups(path):
        return
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.02)
        if path.exists():
            return
    with writer_lock(path):  # recovers; refused while a live writer holds the lock
        pass


def read_index_folder(
    path: str | os.PathLike, fingerprint: str | None = None, embeddings: bool = False
) -> IndexFolder:
    """Load an index folder and check that card, FAISS index and store agree.

    With `fingerprint`, refuse (ModelMismatchError) an index built by another model. The
    store's embeddings are read only when `embeddings` is true (updates need them).
    """
    import faiss

    path = Path(path)
    _wait_for_swap(path)
    card_file = path / CARD_FILE
    if not card_file.is_file():
        if path.is_dir() and any(path.iterdir()):
            raise IndexFolderError(f"{path}: not a karyosearch index (no {CARD_FILE})")
        raise IndexNotFoundError(
            f"{path}: no index here; build one with "
            f"`karyosearch index DATA --model CKPT --index {path}`"
        )
    try:
        raw = json.loads(card_file.read_text(encoding="utf-8"))
        card = IndexCard.from_dict(raw)
    except (OSError, ValueError, TypeError) as err:
        raise IndexFolderError(f"{card_file}: unreadable index card ({err})") from None
    if card.format != INDEX_FORMAT:
        raise IndexFolderError(f"{path}: index format {card.format!r}, expected {INDEX_FORMAT!r}")
    if card.preprocess_version != PREPROCESS_VERSION:
        raise IndexFolderError(
            f"{path}: its vectors were made from images prepared with v{card.preprocess_version}, "
            f"this karyosearch prepares v{PREPROCESS_VERSION}; rebuild the index"
        )
    if fingerprint is not None and fingerprint != card.model_fingerprint:
        raise ModelMismatchError(
            f"{path} was built with model {card.model_fingerprint}, not {fingerprint}; query with "
            "the model that built it or index into another folder (--index)"
        )
    try:
        index = faiss.read_index(str(path / FAISS_FILE))
    except RuntimeError:
        raise IndexFolderError(f"{path / FAISS_FILE}: missing or unreadable FAISS index") from None
    try:
        rows, attrs = read_store(path / STORE_FILE, embeddings=embeddings)
    except StoreError as err:
        raise IndexFolderError(str(err)) from None
    problems = []
    if not hasattr(index, "id_map"):
        problems.append("the FAISS index has no id map")
    if index.d != card.dimension or int(attrs.get("dimension", -1)) != card.dimension:
        problems.append(
            f"dimension: card {card.dimension}, FAISS {index.d}, store {attrs.get('dimension')}"
        )
    if not (index.ntotal == len(rows) == card.count):
        problems.append(f"count: card {card.count}, FAISS {index.ntotal}, store {len(rows)}")
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
    if problems:
        raise IndexFolderError(f"{path}: inconsistent index ({'; '.join(problems)}); rebuild it")
    apply_search_params(index, card.search_params)
    return IndexFolder(path, card, index, rows)


def write_index_folder(path: str | os.PathLike, card: IndexCard, index: Any, rows: Rows) -> None:
    """Write a complete index folder atomically: build it beside `path`, then swap it in.

    Any exception (a full disk, a bug, Ctrl-C) before the swap leaves the previous folder as
    it was; the temporary directory is removed.
    """
    import faiss

    path = Path(path)
    if index.ntotal != len(rows) or index.d != rows.dimension:
        raise ValueError(
            f"FAISS holds {index.ntotal}x{index.d}, store {len(rows)}x{rows.dimension}"
        )
    if path.exists() and not is_index_folder(path) and (not path.is_dir() or any(path.iterdir())):
        raise IndexFolderError(
            f"{path} exists and is not a karyosearch index; choose another --index"
        )
    card.count, card.dimension = len(rows), rows.dimension
    card.updated = timestamp()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()  # (mkdtemp would make it private, 0700, and the swapped-in index with it)
    try:
        faiss.write_index(index, str(tmp / FAISS_FILE))
        write_store(tmp / STORE_FILE, rows, {"model_fingerprint": card.model_fingerprint})
        (tmp / CARD_FILE).write_text(json.dumps(card.to_dict(), indent=2) + "\n", encoding="utf-8")
        for name in (FAISS_FILE, STORE_FILE, CARD_FILE):
            _fsync(tmp / name)
        _swap(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fsync(file: Path) -> None:
    fd = os.open(file, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _swap(new: Path, target: Path) -> None:
    """Put directory `new` at `target`; the old `target` survives any failure."""
    if not target.exists():
        os.replace(new, target)
        return
    backup = target.parent / f".{target.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
    os.replace(target, backup)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(backup, target)
        raise
    shutil.rmtree(backup, ignore_errors=True)


@contextlib.contextmanager
def writer_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold the exclusive writer lock of an index folder (a `.NAME.lock` file beside it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_file = path.parent / f".{path.name}.lock"
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, the atomic swap still protects the folder
        yield
        return
    with open(lock_file, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise IndexFolderError(
                f"{path}: another karyosearch process is writing this index"
            ) from None
        try:
            recover(path)
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
