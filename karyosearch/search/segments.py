"""Writing an index folder: one generation at a time, new immutable segment files and a new
manifest (card.json) renamed into place; merging segments.

A write stores each new file under a name no manifest uses yet, fsyncs it, fsyncs the folder,
writes the manifest to a temporary file, fsyncs it, renames it over card.json and fsyncs the
folder again. Until that rename the previous generation is the index, untouched; after it,
the new one. Any OSError (a full disk) becomes one `IndexWriteError` line and the files of
the unfinished write are deleted. See `search.folder` for the layout and for readers.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import json
import math
import os
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..util.runtime import timestamp
from ..version import __version__
from .faiss_index import build_faiss, new_base_index
from .folder import (
    AUTO_MERGE_MAX_ROWS,
    CARD_FILE,
    INDEX_FORMAT,
    MERGE_FACTOR,
    IndexCard,
    IndexFolder,
    IndexFolderError,
    IndexWriteError,
    WriteConflictError,
    is_index_folder,
    non_finite_error,
    read_card,
)
from .lock import collect_garbage
from .store import Rows, read_store, write_store


def _fsync(file: Path) -> None:
    fd = os.open(file, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError if os.name == "nt" else ()):  # no directory fds on Windows
        _fsync(folder)


def _write_error(err: OSError, where: str | os.PathLike, committed: bool) -> IndexWriteError:
    what = (
        "no space left on device"
        if err.errno in (errno.ENOSPC, errno.EDQUOT)
        else (err.strerror or str(err) or type(err).__name__).lower()
    )
    target = where
    tail = (
        "the new index is in place, the folder sync failed"
        if committed
        else "the previous index is intact"
    )
    return IndexWriteError(f"{what} writing {target}; {tail}")


def new_segment_index(factory: str, rows: Rows, template: Any = None) -> Any:
    """A FAISS IDMap2 index over `rows`: a copy of the trained `template` when there is one
    (IVF, PQ: segments share one training), else built (and trained) afresh."""
    import faiss

    if template is None:
        return build_faiss(factory, rows.embeddings, rows.ids)
    index = faiss.clone_index(template)
    if len(rows):
        index.add_with_ids(
            np.ascontiguousarray(rows.embeddings, np.float32), np.ascontiguousarray(rows.ids)
        )
    return index


def empty_template(index: Any, factory: str) -> Any:
    """The trained, empty copy of `index` that new segments start from; None when `factory`
    needs no training (Flat, HNSW: a new segment is built as cheaply from nothing)."""
    import faiss

    if new_base_index(factory, index.d).is_trained:
        return None
    template = faiss.clone_index(index)
    template.reset()
    return template


def write_generation(
    path: str | os.PathLike,
    base: IndexCard,
    add: Sequence[tuple[Any, Rows]] = (),
    delete: dict[str, np.ndarray] | None = None,
    drop: Sequence[str] = (),
    template: Any = None,
    card: IndexCard | None = None,
) -> IndexCard:
    """Write the generation after `base` (the card read; the caller holds the writer lock).

    `add`: new segments (FAISS index, rows); `delete`: segment name -> ids to tombstone;
    `drop`: segments to leave out (merged ones); `template`: a new trained empty index (a
    rebuild); `card`: the card fields to write (default `base`'s). Refuses
    (WriteConflictError) when the folder's generation is no longer `base`'s. Any OSError
    becomes one IndexWriteError line and leaves the previous generation in place.
    """
    import faiss

    path = Path(path)
    if is_index_folder(path):
        now = read_card(path).generation
        if now != base.generation:
            raise WriteConflictError(
                f"{path}: changed by another process meanwhile (generation {base.generation} -> "
                f"{now}); run again"
            )
    new = copy.deepcopy(card if card is not None else base)
    new.generation = base.generation + 1
    new.format, new.updated, new.karyosearch_version = INDEX_FORMAT, timestamp(), __version__
    gen = f"{new.generation:06d}"
    dropped = set(drop)
    segments = [dict(s) for s in base.segments if s["name"] not in dropped]
    created: list[Path] = []
    committed = False
    where: Path = path

    def start(name: str) -> Path:
        nonlocal where
        where = path / name
        created.append(where)
        return where

    try:
        for index, rows in add:
            if index.ntotal != len(rows) or index.d != rows.dimension:
                raise ValueError(
                    f"FAISS holds {index.ntotal}x{index.d}, store {len(rows)}x{rows.dimension}"
                )
            if not np.isfinite(rows.embeddings).all():
                raise non_finite_error(path, int((~np.isfinite(rows.embeddings).all(axis=1)).sum()))
            name = f"seg-{gen}-{secrets.token_hex(3)}"
            faiss.write_index(index, str(start(f"{name}.faiss")))
            _fsync(where)
            write_store(start(f"{name}.h5"), rows, {"model_fingerprint": new.model_fingerprint})
            _fsync(where)
            segments.append(
                {
                    "name": name,
                    "faiss": f"{name}.faiss",
                    "store": f"{name}.h5",
                    "count": len(rows),
                    "deleted": "",
                    "n_deleted": 0,
                    "finite": True,
                }
            )
        if template is not None:
            new.template = f"template-{gen}-{secrets.token_hex(3)}.faiss"
            faiss.write_index(template, str(start(new.template)))
            _fsync(where)
        old_deleted = {s["name"]: s for s in base.segments}
        for seg in segments:
            ids = (delete or {}).get(seg["name"])
            if ids is None or not len(ids):
                continue
            before = old_deleted.get(seg["name"], {}).get("deleted")
            union = np.asarray(ids, np.int64)
            if before:
                union = np.concatenate([np.load(path / before).astype(np.int64), union])
            union = np.unique(union)
            seg["deleted"] = f"{seg['name']}.del-{gen}.npy"
            seg["n_deleted"] = len(union)
            with open(start(seg["deleted"]), "wb") as fh:
                np.save(fh, union)
            _fsync(where)
        new.segments = segments
        new.count = sum(int(s["count"]) - int(s.get("n_deleted", 0)) for s in segments)
        new.dimension = base.dimension
        tmp = start(f".tmp-{CARD_FILE}-{secrets.token_hex(4)}")
        tmp.write_text(json.dumps(new.to_dict(), indent=2) + "\n", encoding="utf-8")
        _fsync(tmp)
        _fsync_dir(path)  # the segment files' names are durable before the manifest names them
        where = path / CARD_FILE
        os.replace(tmp, path / CARD_FILE)
        committed = True
        created.remove(tmp)
        _fsync_dir(path)
    except BaseException as err:
        if not committed:
            for file in created:
                with contextlib.suppress(OSError):
                    file.unlink()
        if isinstance(err, OSError):
            raise _write_error(err, where, committed) from None
        raise
    collect_garbage(path, {CARD_FILE} | new.files() | base.files())
    return new


def create_index_folder(
    path: str | os.PathLike, card: IndexCard, index: Any, rows: Rows, template: Any = None
) -> IndexCard:
    """Write a new index folder (generation 1): built in a temporary sibling folder, then
    renamed into place, so a crash leaves no half-made index."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise IndexFolderError(
            f"{path} exists and is not a karyosearch index; choose another --index"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        tmp.mkdir()  # (mkdtemp would make it private, 0700, and the index with it)
    except OSError as err:
        raise _write_error(err, path, False) from None
    try:
        empty = copy.deepcopy(card)
        empty.generation, empty.segments, empty.template = 0, [], ""
        empty.dimension = rows.dimension
        new = write_generation(tmp, empty, [(index, rows)], template=template, card=card)
        try:
            if path.exists():
                path.rmdir()
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except OSError as err:
            raise _write_error(err, path, False) from None
        return new
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_index_folder(
    path: str | os.PathLike,
    card: IndexCard,
    index: Any,
    rows: Rows,
    base: IndexCard | None = None,
) -> None:
    """Write a complete index (one segment) at `path`: a new folder, or a new generation that
    replaces every segment of the index there (`base`: the card read, checked against a racing
    writer; default the folder's). A crash at any point leaves the previous index intact. The
    caller holds the writer lock when replacing."""
    path = Path(path)
    if index.ntotal != len(rows) or index.d != rows.dimension:
        raise ValueError(
            f"FAISS holds {index.ntotal}x{index.d}, store {len(rows)}x{rows.dimension}"
        )
    card.count, card.dimension = len(rows), rows.dimension
    template = empty_template(index, card.factory)
    if not is_index_folder(path):
        create_index_folder(path, card, index, rows, template)
        return
    base = base if base is not None else read_card(path)
    card = copy.deepcopy(card)
    card.template = ""
    write_generation(
        path,
        base,
        [(index, rows)],
        drop=[s["name"] for s in base.segments],
        template=template,
        card=card,
    )


# -- merging -------------------------------------------------------------------------------


def merge_candidates(card: IndexCard) -> list[str]:
    """Segments an automatic merge joins: `MERGE_FACTOR` or more of one size tier (powers of
    ten of their live rows), or one with more rows deleted than live, as long as the result
    stays within `AUTO_MERGE_MAX_ROWS`."""
    tiers: dict[int, list[dict[str, Any]]] = {}
    for s in card.segments:
        live = int(s["count"]) - int(s.get("n_deleted", 0))
        if live <= AUTO_MERGE_MAX_ROWS:
            tiers.setdefault(int(math.log10(max(live, 1))), []).append(s)
    for tier in sorted(tiers):
        group = tiers[tier]
        total = sum(int(s["count"]) - int(s.get("n_deleted", 0)) for s in group)
        if len(group) >= MERGE_FACTOR and total <= AUTO_MERGE_MAX_ROWS:
            return [s["name"] for s in group]
    for s in card.segments:
        live = int(s["count"]) - int(s.get("n_deleted", 0))
        if int(s.get("n_deleted", 0)) > live and live <= AUTO_MERGE_MAX_ROWS:
            return [s["name"]]
    return []


def merge_segments(folder: IndexFolder, names: Sequence[str] | None = None) -> IndexCard:
    """Join segments `names` (default: all) of `folder` into one, leaving deleted rows out
    (the caller holds the writer lock). Answers are the same before and after."""
    names = [s.name for s in folder.segments] if names is None else list(names)
    chosen = [s for s in folder.segments if s.name in set(names)]
    parts = []
    for seg in chosen:
        rows, _ = read_store(folder.path / seg.info["store"], embeddings=True)
        parts.append(rows.take(np.flatnonzero(~np.isin(rows.ids, seg.deleted))))
    merged = Rows.concat(parts) if parts else Rows.empty(folder.card.dimension)
    add = []
    if len(merged):
        add = [(new_segment_index(folder.card.factory, merged, folder.template()), merged)]
    return write_generation(folder.path, folder.card, add, drop=[s.name for s in chosen])
