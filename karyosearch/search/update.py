"""Build, update and prune an index: embed the new and changed images of a dataset, drop
removed ones, and write the index folder atomically.

Updates are incremental: a file is embedded when its path is new to the index or its bytes
changed (SHA-1); unchanged files keep their vectors and ids. Nothing is dropped unless asked
(`prune=True`, or `remove`). A file that cannot be read is reported with the reason and
skipped; the rest is indexed. An index is only ever extended with the model that built it.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.datasets import Dataset, Item, Layout, read_dataset
from ..errors import UserError
from ..model import EMBEDDING_DIM
from ..model.checkpoint import ModelLike, resolve_encoder
from ..model.shipped import choose_shipped
from ..util.runtime import pick_device
from .archive import calibrate_if_due
from .faiss_index import (
    DEFAULT_FACTORY,
    auto_choice,
    build_faiss,
    check_trainable,
    default_search_params,
    new_base_index,
    outgrown,
    parse_auto,
)
from .folder import (
    CARD_FILE,
    IndexCard,
    IndexFolder,
    IndexNotFoundError,
    WriteConflictError,
    check_encoder,
    read_index_folder,
    writer_lock,
)
from .segments import (
    merge_candidates,
    merge_segments,
    new_segment_index,
    write_generation,
    write_index_folder,
)
from .store import Rows, file_sha1

PathLike = str | os.PathLike


@dataclass
class IndexReport:
    """What `build_or_update` did."""

    index: str
    model_fingerprint: str
    factory: str
    count: int  # vectors in the index afterwards
    added: int  # new files embedded and added
    updated: int  # files whose bytes changed, re-embedded under their old id
    unchanged: int  # files already indexed with the same bytes (not embedded)
    relabelled: int  # unchanged files whose label, cell or patient changed (not embedded)
    removed: int  # rows dropped: pruned, or changed files that no longer read
    rejected: list[dict[str, str]]  # {"path", "reason"}: files that could not be indexed
    embedded: int  # images run through the encoder
    seconds: float  # wall time of the embedding
    images_per_s: float
    written: bool  # False when nothing changed and the folder was left untouched (nor chosen)
    # the archive call's setting this write chose (`search.archive`), None when none was due
    archive: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RemoveReport:
    index: str
    removed: int
    count: int
    not_found: list[str] = field(default_factory=list)  # given paths that matched no row

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _label_index(item: Item) -> int:
    return int(item.label) if item.label is not None else -1


def hash_items(items: Sequence[Item]) -> tuple[list[str | None], list[str | None]]:
    """SHA-1 per item, or None with the reason where the file cannot be read."""

    def one(item: Item) -> tuple[str | None, str | None]:
        try:
            return file_sha1(item.path), None
        except FileNotFoundError:
            return None, "no such file"
        except IsADirectoryError:
            return None, "not a file"
        except OSError as err:
            return None, f"cannot read file ({err.strerror or err})"

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        results = list(pool.map(one, items))
    return [h for h, _ in results], [r for _, r in results]


# -- build / update ------------------------------------------------------------------------


@dataclass
class UpdatePlan:
    """What `apply_update` will do; made by `plan_update` (cheap: hashes, no embedding)."""

    index_dir: Path
    encoder: Any
    model_path: str
    factory: str
    existing: IndexFolder | None  # the index as it was read (metadata; no embeddings)
    rebuild: bool  # build the FAISS index afresh (new index or new factory string)
    to_embed: list[Item]  # new and changed files, in dataset order
    hashes: dict[str, str]  # path -> SHA-1 of the files in to_embed
    changed_ids: dict[str, int]  # path -> existing id, for changed files
    relabel: dict[int, Item]  # existing id -> item with the new label/cell/patient
    prune_ids: list[int]  # ids to drop because their file left the dataset (prune=True)
    unchanged: int
    rejected: list[dict[str, str]]  # found by the dataset reader or unreadable when hashed
    stamp: int | None  # the generation of the card read, to refuse a racing writer
    model_note: str | None = None  # how the model was chosen when none was given


def plan_update(
    index_dir: PathLike,
    data: PathLike | Dataset,
    model: ModelLike | None,
    factory: str | None = None,
    layout: Layout = "auto",
    prune: bool = False,
    device: str = "cpu",
) -> UpdatePlan:
    """Read the index (if any) and the dataset, and decide which files need embedding.

    Refuses (ModelMismatchError) a model other than the one that built the index, and checks
    the factory string (and that there are enough vectors to train it) before any embedding.
    A checkpoint path is loaded on `device` (auto, cpu or cuda). With no `model`, an existing
    index is extended with the checkpoint its card names, and a new one is built with the
    shipped encoder for the images' stain (`model.shipped`); `model_note` says which.
    """
    index_dir = Path(index_dir)
    dataset = data if isinstance(data, Dataset) else read_dataset(data, layout)
    try:
        existing = read_index_folder(index_dir, with_faiss=False)
    except IndexNotFoundError:
        existing = None
    note = None
    if model is None:
        model, note = _default_model(existing, dataset)
    encoder, model_path = resolve_encoder(model, pick_device(device))
    if existing is not None:
        check_encoder(existing.card, encoder, index_dir)
    old_factory = existing.card.factory if existing is not None else None
    factory = (factory or old_factory or DEFAULT_FACTORY).strip()
    new_base_index(factory, EMBEDDING_DIM)  # a bad factory string fails now, not after embedding
    # `auto` on an existing index keeps the card's choice unless the archive outgrew it
    # (decided below, once the count after this update is known)
    auto_again = bool(old_factory) and parse_auto(factory) is not None

    rejected = [{"path": r.path, "reason": r.reason} for r in dataset.rejected]
    items: list[Item] = []
    seen: set[str] = set()
    for item in dataset.items:
        path = str(Path(item.path).resolve())
        if path not in seen:
            seen.add(path)
            items.append(Item(path, item.label, item.cell_id, item.patient_id))
    hashes, reasons = hash_items(items)

    rows = existing.rows if existing is not None else Rows.empty()
    position = {p: i for i, p in enumerate(rows.paths)}
    to_embed, new_hashes, changed_ids, relabel, unchanged = [], {}, {}, {}, 0
    for item, digest, reason in zip(items, hashes, reasons, strict=True):
        if digest is None:
            rejected.append({"path": item.path, "reason": reason or "unreadable"})
            continue
        i = position.get(item.path)
        if i is None or rows.sha1[i] != digest:
            to_embed.append(item)
            new_hashes[item.path] = digest
            if i is not None:
                changed_ids[item.path] = int(rows.ids[i])
            continue
        unchanged += 1
        meta = (_label_index(item), item.cell_id or "", item.patient_id or "")
        if meta != (int(rows.labels[i]), rows.cell_ids[i], rows.patient_ids[i]):
            relabel[int(rows.ids[i])] = item

    prune_ids: list[int] = []
    if prune:
        root = dataset.root if dataset.root.is_dir() else dataset.root.parent
        prefix = str(root) + os.sep
        prune_ids = [
            int(i)
            for i, p in zip(rows.ids, rows.paths, strict=True)
            if p.startswith(prefix) and p not in seen
        ]
    count = len(rows) - len(prune_ids) + len(to_embed) - len(changed_ids)
    if auto_again and not outgrown(old_factory or "", count):
        factory = old_factory or factory  # `auto` chose when the index was built
    rebuild = existing is None or factory != old_factory
    if rebuild:
        check_trainable(factory, EMBEDDING_DIM, count)
    stamp = existing.card.generation if existing is not None else None
    return UpdatePlan(
        index_dir,
        encoder,
        model_path,
        factory,
        existing,
        rebuild,
        to_embed,
        new_hashes,
        changed_ids,
        relabel,
        prune_ids,
        unchanged,
        rejected,
        stamp,
        note,
    )


def _default_model(existing: IndexFolder | None, dataset: Dataset) -> tuple[Path, str]:
    """The checkpoint to use when none is given, and a line saying why."""
    if existing is not None and existing.card.model_path:
        path = Path(existing.card.model_path)
        if path.is_file():
            return path, f"no --model given: extending the index with its own model {path}"
    choice = choose_shipped([it.path for it in dataset.items])
    return choice.path, choice.note


def apply_update(
    plan: UpdatePlan, batch_size: int = 64, progress: Callable[[int], None] | None = None
) -> IndexReport:
    """Embed the planned files and write the updated index folder atomically.

    `progress(n)` is called with the number of files finished after each batch.
    """
    from ..model.embed import embed_files

    start = time.perf_counter()
    embedded = embed_files(
        plan.encoder, [it.path for it in plan.to_embed], batch_size, progress=progress
    )
    seconds = time.perf_counter() - start
    rejected = list(plan.rejected) + [{"path": e.path, "reason": e.reason} for e in embedded.errors]
    by_path = {it.path: it for it in plan.to_embed}

    with writer_lock(plan.index_dir):
        _check_not_raced(plan)
        old = plan.existing
        rows = old.rows if old is not None else Rows.empty(0)
        next_id = max(old.card.next_id, int(rows.ids.max(initial=-1)) + 1) if old is not None else 0
        drop = set(plan.prune_ids) | set(plan.changed_ids.values())

        new_ids = []
        for path in embedded.paths:
            if path in plan.changed_ids:
                new_ids.append(plan.changed_ids[path])
            else:
                new_ids.append(next_id)
                next_id += 1
        order = np.argsort(np.asarray(new_ids, np.int64), kind="stable")
        paths = [embedded.paths[i] for i in order]
        items = [by_path[p] for p in paths]
        added_rows = Rows(
            np.asarray(new_ids, np.int64)[order],
            embedded.embeddings[order].reshape(len(order), EMBEDDING_DIM),
            np.asarray([_label_index(it) for it in items], np.int8),
            paths,
            [it.cell_id or "" for it in items],
            [it.patient_id or "" for it in items],
            [plan.hashes[p] for p in paths],
        )
        # relabelled rows are written again (same id, same vector) in the new segment
        relabel_ids = np.asarray(sorted(i for i in plan.relabel if i not in drop), np.int64)
        relabelled = _relabelled(old, relabel_ids, plan.relabel)

        updated = sum(1 for p in embedded.paths if p in plan.changed_ids)
        # a changed file that no longer reads loses its stale vector
        removed = len(plan.prune_ids) + len(plan.changed_ids) - updated
        changed = bool(len(embedded.paths) or removed or plan.relabel or plan.rebuild)
        count = len(rows) - len(drop) + len(added_rows)
        if old is None and not len(added_rows):
            raise UserError(
                f"nothing to index: no image could be read ({len(rejected)} rejected"
                + (f", e.g. {rejected[0]['path']}: {rejected[0]['reason']}" if rejected else "")
                + ")"
            )
        factory = plan.factory  # what the report names: `auto`'s choice once it is built
        if changed:
            card = _new_card(plan) if old is None else copy.deepcopy(old.card)
            card.model_path = plan.model_path or card.model_path
            card.next_id = next_id
            if plan.rebuild:
                parts = [added_rows, relabelled]
                if old is not None:
                    keep = rows.ids[~np.isin(rows.ids, np.concatenate([list(drop), relabel_ids]))]
                    parts.append(_with_embeddings(old, keep))
                new_rows = Rows.concat(parts)
                index = build_faiss(plan.factory, new_rows.embeddings, new_rows.ids)
                choice = auto_choice(index)  # `auto`: the card records what was built
                card.factory = choice.factory if choice is not None else plan.factory
                factory = card.factory
                card.search_params = default_search_params(index)
                write_index_folder(
                    plan.index_dir, card, index, new_rows, old.card if old is not None else None
                )
            else:
                segment = Rows.concat([added_rows, relabelled])
                add = []
                if len(segment):
                    add = [(new_segment_index(plan.factory, segment, old.template()), segment)]
                tombstones = _tombstones(old, np.concatenate([list(drop), relabel_ids]))
                new = write_generation(plan.index_dir, old.card, add, tombstones, card=card)
                _auto_merge(plan.index_dir, new)
        # the archive chooses its call's setting again when its labelled crops changed enough
        gone = rows.positions(np.concatenate([list(drop), relabel_ids]).astype(np.int64))
        labelled = sum(int((r.labels >= 0).sum()) for r in (rows, added_rows, relabelled))
        chose = calibrate_if_due(
            plan.index_dir, plan.encoder, labelled - int((rows.labels[gone[gone >= 0]] >= 0).sum())
        )

    return IndexReport(
        index=str(plan.index_dir),
        model_fingerprint=plan.encoder.fingerprint,
        factory=factory,
        count=count,
        added=len(embedded.paths) - updated,
        updated=updated,
        unchanged=plan.unchanged,
        relabelled=len(plan.relabel),
        removed=removed,
        rejected=rejected,
        embedded=len(embedded.paths),
        seconds=round(seconds, 3),
        images_per_s=round(len(plan.to_embed) / seconds, 2)
        if seconds > 0 and plan.to_embed
        else 0.0,
        written=changed or chose is not None,
        archive=chose.archive if chose is not None else None,
    )


def _new_card(plan: UpdatePlan) -> IndexCard:
    cfg = plan.encoder.cfg
    return IndexCard(
        model_fingerprint=plan.encoder.fingerprint,
        arch=cfg.arch,
        image_size=cfg.image_size,
        preprocess_version=cfg.preprocess_version,
        dimension=EMBEDDING_DIM,
        factory=plan.factory,
    )


def _check_not_raced(plan: UpdatePlan) -> None:
    """Refuse to write when another process changed the index since `plan_update` read it
    (its generation moved on; `write_generation` checks again under the lock)."""
    if plan.stamp is None:
        if (plan.index_dir / CARD_FILE).is_file():
            raise WriteConflictError(
                f"{plan.index_dir}: created by another process meanwhile; run again"
            )
        return
    try:
        now = json.loads((plan.index_dir / CARD_FILE).read_text(encoding="utf-8"))["generation"]
    except (OSError, ValueError, KeyError, TypeError):
        now = None
    if now != plan.stamp:
        raise WriteConflictError(
            f"{plan.index_dir}: changed by another process meanwhile (generation {plan.stamp} -> "
            f"{now}); run again"
        )


def _relabelled(old: IndexFolder | None, ids: np.ndarray, items: dict[int, Item]) -> Rows:
    """The rows `ids` with their vectors and the new label, cell and patient of `items`."""
    if old is None or not len(ids):
        return Rows.empty()
    rows = _with_embeddings(old, ids)
    for pos, row_id in enumerate(rows.ids):
        item = items[int(row_id)]
        rows.labels[pos] = _label_index(item)
        rows.cell_ids[pos] = item.cell_id or ""
        rows.patient_ids[pos] = item.patient_id or ""
    return rows


def _with_embeddings(folder: IndexFolder, ids: np.ndarray) -> Rows:
    """The live rows `ids` of `folder`, with their stored vectors."""
    meta = folder.rows.take(folder.rows.positions(ids))
    return Rows(
        meta.ids,
        folder.embeddings_of(meta.ids),
        meta.labels,
        meta.paths,
        meta.cell_ids,
        meta.patient_ids,
        meta.sha1,
    )


def _tombstones(folder: IndexFolder, ids: np.ndarray) -> dict[str, np.ndarray]:
    """Segment name -> the given ids that live in it."""
    ids = np.asarray(ids, np.int64)
    out = {}
    for seg in folder.segments:
        mine = ids[(seg.rows.positions(ids) >= 0) & ~np.isin(ids, seg.deleted)]
        if len(mine):
            out[seg.name] = mine
    return out


def _auto_merge(index_dir: Path, card: IndexCard) -> None:
    """Under the lock, after writing `card`: join small segments (`merge_candidates`)."""
    names = merge_candidates(card)
    if names:
        merge_segments(read_index_folder(index_dir, with_faiss=False), names)


def build_or_update(
    index_dir: PathLike,
    data: PathLike | Dataset,
    model: ModelLike | None,
    factory: str | None = None,
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
    layout: Layout = "auto",
    prune: bool = False,
    device: str = "cpu",
) -> IndexReport:
    """Embed the new and changed images of `data` and store them in the index at `index_dir`.

    `factory` is a FAISS factory string (default: the index's own, else "Flat"); a different
    one rebuilds the FAISS index from the stored vectors. `prune=True` drops indexed files
    under the dataset's folder that are no longer in it.
    """
    plan = plan_update(index_dir, data, model, factory, layout, prune, device)
    return apply_update(plan, batch_size, progress)


def remove(index_dir: PathLike, paths: Sequence[PathLike]) -> RemoveReport:
    """Drop images from the index: each path is a file, or a folder meaning every file under it.

    Paths need not exist any more; they are matched against the stored absolute paths.
    """
    index_dir = Path(index_dir)
    with writer_lock(index_dir):
        folder = read_index_folder(index_dir, with_faiss=False)
        rows = folder.rows
        hit = np.zeros(len(rows), bool)
        not_found = []
        for given in paths:
            target = str(Path(given).expanduser().resolve())
            mask = np.fromiter(
                (p == target or p.startswith(target.rstrip(os.sep) + os.sep) for p in rows.paths),
                bool,
                len(rows),
            )
            if not mask.any():
                not_found.append(str(given))
            hit |= mask
        if hit.any():
            tombstones = _tombstones(folder, rows.ids[hit])
            new = write_generation(index_dir, folder.card, delete=tombstones)
            _auto_merge(index_dir, new)
        return RemoveReport(str(index_dir), int(hit.sum()), int(len(rows) - hit.sum()), not_found)
