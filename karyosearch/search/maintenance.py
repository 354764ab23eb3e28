"""Index maintenance: merge an index's segments into one (`karyosearch index --merge`), and
rebuild it by re-embedding every indexed file (`karyosearch index --rebuild`), which mends an
index that holds non-finite vectors."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.datasets import Item
from ..errors import UserError
from ..model import EMBEDDING_DIM
from ..model.checkpoint import ModelLike, resolve_encoder
from ..util.runtime import pick_device
from .archive import calibrate_if_due
from .faiss_index import build_faiss, default_search_params
from .folder import read_index_folder, writer_lock
from .segments import merge_segments, write_index_folder
from .store import Rows
from .update import IndexReport, PathLike, hash_items


@dataclass
class MergeReport:
    index: str
    segments_before: int
    segments_after: int
    count: int  # live vectors (unchanged by a merge)
    dropped: int  # deleted rows merged away
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def merge(index_dir: PathLike) -> MergeReport:
    """Join every segment of the index into one and drop its deleted rows (the same answers
    before and after). Costs a rewrite of the archive: run it when nothing else writes."""
    index_dir = Path(index_dir)
    start = time.perf_counter()
    with writer_lock(index_dir):
        folder = read_index_folder(index_dir, with_faiss=False)
        before = len(folder.segments)
        dropped = sum(len(s.deleted) for s in folder.segments)
        card = folder.card
        if before > 1 or dropped:
            card = merge_segments(folder)
    return MergeReport(
        str(index_dir),
        before,
        len(card.segments),
        card.count,
        dropped,
        round(time.perf_counter() - start, 3),
    )


def rebuild_index(
    index_dir: PathLike,
    model: ModelLike | None = None,
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
    device: str = "cpu",
) -> IndexReport:
    """Re-embed every row from its file with `model` (default: the card's) and write a fresh
    index under that model's fingerprint: mends an index that holds non-finite vectors (a
    broken model wrote them) or moves an index to a new model. Ids, labels and cells are
    kept; a file that no longer reads is dropped and reported."""
    from ..model.embed import embed_files

    index_dir = Path(index_dir)
    folder = read_index_folder(index_dir, allow_non_finite=True, with_faiss=False)
    card = copy.deepcopy(folder.card)
    if model is None:
        if not card.model_path or not Path(card.model_path).is_file():
            raise UserError(
                f"{index_dir}: the model that built this index ({card.model_path or 'unknown'}) "
                "is not there; pass a checkpoint (--model)"
            )
        model = card.model_path
    encoder, model_path = resolve_encoder(model, pick_device(device))
    rows = folder.rows
    start = time.perf_counter()
    embedded = embed_files(encoder, rows.paths, batch_size, progress=progress)
    seconds = time.perf_counter() - start
    rejected = [{"path": e.path, "reason": e.reason} for e in embedded.errors]
    position = {p: i for i, p in enumerate(rows.paths)}
    keep = np.asarray([position[p] for p in embedded.paths], np.int64)
    order = np.argsort(keep, kind="stable")
    kept = rows.take(keep[order])
    hashes, _ = hash_items([Item(p, -1) for p in kept.paths])
    new_rows = Rows(
        kept.ids,
        embedded.embeddings[order].reshape(len(order), EMBEDDING_DIM),
        kept.labels,
        kept.paths,
        kept.cell_ids,
        kept.patient_ids,
        [h or s for h, s in zip(hashes, kept.sha1, strict=True)],
    )
    if not len(new_rows):
        raise UserError(f"{index_dir}: none of the indexed files could be read; nothing rebuilt")
    cfg = encoder.cfg
    card.model_fingerprint, card.arch = encoder.fingerprint, cfg.arch
    card.image_size, card.preprocess_version = cfg.image_size, cfg.preprocess_version
    card.model_path = model_path or card.model_path
    with writer_lock(index_dir):
        index = build_faiss(card.factory, new_rows.embeddings, new_rows.ids)
        card.search_params = default_search_params(index)
        write_index_folder(index_dir, card, index, new_rows, folder.card)
        calibrate_if_due(index_dir, encoder, int((new_rows.labels >= 0).sum()))
    return IndexReport(
        index=str(index_dir),
        model_fingerprint=encoder.fingerprint,
        factory=card.factory,
        count=len(new_rows),
        added=0,
        updated=len(new_rows),
        unchanged=0,
        relabelled=0,
        removed=len(rows) - len(new_rows),
        rejected=rejected,
        embedded=len(new_rows),
        seconds=round(seconds, 3),
        images_per_s=round(len(rows) / seconds, 2) if seconds > 0 else 0.0,
        written=True,
    )
