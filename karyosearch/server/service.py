"""What `karyosearch serve` does for a request, off the event loop: the encoder on one worker thread
(concurrent queries batched), queries, karyotypes, corrections, thumbnails and index writes, all
through the library."""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import queue
import secrets
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .library import (
    CLASS_NAMES,
    Dataset,
    EmbeddedFiles,
    ImageError,
    Item,
    SearchIndex,
    build_or_update,
    class_index,
    describe_archive,
    display_image,
    embed_arrays,
    embed_files,
    hypothesis_named,
    iscn,
    karyotype_cell,
    load,
    normal_counts,
    read_grey,
    remove,
    render_karyogram,
    resolve_params,
    true_karyotype,
)
from .uploads import ApiError, Upload, clean_name, none_read, stage

log = logging.getLogger("karyosearch.server")
STATIC_DIR = Path(__file__).parent / "static"
THUMB_BOX = 160  # px: thumbnails fit in a THUMB_BOX x THUMB_BOX square
WRITE_PATHS = ("/api/index", "/api/images/")


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(array, np.uint8)).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def thumbnail(path: str | os.PathLike, box: int = THUMB_BOX) -> bytes:
    """A crop as the karyogram shows it (cropped, dark on light, contrast stretched), as PNG
    fitting a `box` px square. Raises ImageError for a file that cannot be read."""
    shown = display_image(load(path)).astype(np.uint8)
    im = Image.fromarray(shown)
    scale = min(1.0, box / max(im.size))
    if scale < 1.0:
        size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
        im = im.resize(size, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def recount(crops: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The karyotype of a cell whose crops' labels a person set (or corrected).

    Each crop is `{"path", "label"}`, the label a class ("1".."22", "X", "Y") or "extra" (no
    chromosome: left out). The karyotype is read from the counts as the library reads a
    labelled cell (`true_karyotype`: an autosome with fewer than two crops is a crop not cut
    out, not a monosomy; sex chromosomes counted as they are), else written from the counts
    as they are (`iscn`). Classes whose count differs from a normal cell's are listed.
    """
    if not crops:
        raise ApiError(400, "no crops: send {'crops': [{'path': name, 'label': '21'}, ...]}")
    labels: list[int] = []
    out_crops = []
    for i, crop in enumerate(crops):
        if not isinstance(crop, dict) or "label" not in crop:
            raise ApiError(400, f"crop {i}: expected an object with 'path' and 'label'")
        raw = str(crop["label"]).strip()
        name = clean_name(str(crop.get("path", "")), f"crop {i + 1}")
        if raw.lower() == "extra":
            out_crops.append({"path": name, "label": "extra", "extra": True})
            continue
        try:
            idx = class_index(raw)
        except ValueError as err:
            raise ApiError(400, f"crop {i} ({name}): {err}") from None
        labels.append(idx)
        out_crops.append({"path": name, "label": CLASS_NAMES[idx], "extra": False})
    counts = np.bincount(np.asarray(labels, int), minlength=len(CLASS_NAMES))
    karyotype = true_karyotype(labels) if labels else None
    if karyotype is None:
        karyotype, kind, expected = iscn(counts), "unreadable", counts
    else:
        try:
            hyp = hypothesis_named(karyotype)
            kind, expected = hyp.kind, np.asarray(hyp.counts)
        except ValueError:
            kind = "other"
            expected = counts.copy()
            expected[:22] = np.maximum(counts[:22], 2)
    missing = [
        CLASS_NAMES[c] for c in range(len(CLASS_NAMES)) for _ in range(expected[c] - counts[c])
    ]
    has_y = bool(counts[CLASS_NAMES.index("Y")])
    odd = (np.asarray(expected) != normal_counts("XY" if has_y else "XX")) | (counts < expected)
    return {
        "karyotype": karyotype,
        "normal": karyotype in ("46,XX", "46,XY"),
        "kind": kind,
        "counts": {name: int(n) for name, n in zip(CLASS_NAMES, counts, strict=True)},
        "missing": missing,
        "review_classes": [CLASS_NAMES[i] for i in np.flatnonzero(odd)],
        "extra": [c["path"] for c in out_crops if c["extra"]],
        "n_crops": len(out_crops),
        "crops": out_crops,
    }


class Batcher:
    """Embeds the query images of concurrent requests together: one worker thread takes every
    request waiting (up to `max_images` images) and runs them through the encoder as one
    batch, under the encoder lock. Under load, 50 single-crop queries cost a few forward
    passes instead of 50; alone, a request waits for nobody.

    Batches are padded (with a repeat of one image, whose rows are dropped) to one of a few
    sizes, `BUCKETS`, each run once at start: the CPU kernels are made and cached per input
    shape (oneDNN under bf16 autocast), so 64 distinct batch sizes grew the server by ~600 MB
    while a fixed set keeps its memory flat from the first request.
    """

    BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64)

    def __init__(self, encoder: Any, lock: threading.Lock, warm: bool = True):
        self.encoder = encoder
        self.lock = lock
        self.max_images = self.BUCKETS[-1]
        self.jobs: queue.Queue[tuple[list[str], Future]] = queue.Queue()
        self.batches = 0  # forward batches run so far
        self.warm = warm
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="karyosearch-embed", daemon=True)
        self.thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Stop the worker after the batch it is on, and wait for it: a thread still inside
        the encoder when the interpreter exits aborts the process (exit 134)."""
        self.stopping.set()
        self.jobs.put(([], Future()))  # wakes a worker waiting for jobs
        self.thread.join(timeout)

    def embed(self, paths: list[str]) -> EmbeddedFiles:
        """`embed_files(encoder, paths)`, batched with other requests' images."""
        done: Future = Future()
        self.jobs.put((paths, done))
        return done.result()

    def _warm_up(self) -> None:
        cfg = self.encoder.cfg
        channels = (2,) if cfg.canvas else ()
        for n in self.BUCKETS:
            if self.stopping.is_set():
                return
            with self.lock:
                embed_arrays(
                    self.encoder,
                    np.zeros((n, *channels, cfg.image_size, cfg.image_size), np.float32),
                )

    def _run(self) -> None:
        if self.warm:
            try:
                self._warm_up()
            except Exception:  # a failed warm-up only costs memory later
                log.exception("warm-up of the encoder failed")
        while not self.stopping.is_set():
            jobs = [self.jobs.get()]
            if self.stopping.is_set():
                break
            n = len(jobs[0][0])
            while n < self.max_images:
                try:
                    job = self.jobs.get_nowait()
                except queue.Empty:
                    break
                jobs.append(job)
                n += len(job[0])
            paths = [p for job_paths, _ in jobs for p in job_paths]
            size = next((b for b in self.BUCKETS if b >= len(paths)), len(paths))
            padded = paths + paths[:1] * (size - len(paths)) if paths else paths
            try:
                with self.lock:
                    emb = embed_files(self.encoder, padded, batch_size=self.max_images)
                self.batches += 1
            except BaseException as err:  # handed to the waiting requests, never lost
                for _, done in jobs:
                    done.set_exception(err)
                continue
            row = {p: i for i, p in enumerate(emb.paths)}
            failed = {e.path: e for e in emb.errors}
            for job_paths, done in jobs:
                rows = [row[p] for p in job_paths if p in row]
                done.set_result(
                    EmbeddedFiles(
                        [emb.paths[i] for i in rows],
                        emb.embeddings[rows],
                        emb.scores[rows],
                        [failed[p] for p in job_paths if p in failed],
                        emb.areas[rows],
                    )
                )


class Engine:
    """The server's state: the opened index and its encoder, the locks, the upload store."""

    def __init__(
        self,
        index_dir: str | os.PathLike,
        model: str | os.PathLike | None,
        uploads_dir: str | os.PathLike | None = None,
        warm_up: bool = True,
    ):
        self.index_dir = Path(index_dir)
        self.search = SearchIndex.open(self.index_dir, model)
        self.encoder = self.search.encoder  # loaded now, once, not on the first request
        model_path = str(model) if model is not None else self.search.card.model_path
        self.params = resolve_params(model_path)
        self.uploads_dir = (
            Path(uploads_dir)
            if uploads_dir is not None
            else self.index_dir.parent / f"{self.index_dir.name}.uploads"
        )
        self.encoder_lock = threading.Lock()  # one forward pass at a time
        self.write_lock = threading.Lock()  # one index write at a time (the file lock too)
        self.render_lock = threading.Lock()  # matplotlib figures, one at a time
        self.batcher = Batcher(self.encoder, self.encoder_lock, warm_up)
        self._thumbs: OrderedDict[tuple[int, str], bytes] = OrderedDict()
        self._thumbs_lock = threading.Lock()
        self._reindex()

    def _reindex(self) -> None:
        rows = self.search.rows
        self.position = {int(i): p for p, i in enumerate(rows.ids)}

    def path_of(self, image_id: int) -> str:
        pos = self.position.get(image_id)
        if pos is None:
            raise ApiError(404, f"no image with id {image_id} in the index")
        return self.search.rows.paths[pos]

    # -- reads ----------------------------------------------------------------------------

    def image_png(self, image_id: int) -> bytes:
        path = self.path_of(image_id)
        try:
            return png_bytes(read_grey(path))
        except ImageError as err:
            raise ApiError(
                404, f"image {image_id} cannot be read on the server ({err.reason})"
            ) from None

    def thumb_png(self, image_id: int) -> bytes:
        path = self.path_of(image_id)
        key = (image_id, self.search.card.updated)
        with self._thumbs_lock:
            if key in self._thumbs:
                self._thumbs.move_to_end(key)
                return self._thumbs[key]
        try:
            png = thumbnail(path)
        except ImageError as err:
            raise ApiError(
                404, f"image {image_id} cannot be read on the server ({err.reason})"
            ) from None
        with self._thumbs_lock:
            self._thumbs[key] = png
            while len(self._thumbs) > 8192:
                self._thumbs.popitem(last=False)
        return png

    def card(self) -> dict[str, Any]:
        """The index card, with `archive_note`: what its archive call chose, in words."""
        card = self.search.card.to_dict()
        card["archive_note"] = describe_archive(card.get("archive") or {})
        return card

    def query(self, uploads: Sequence[Upload], k: int) -> dict[str, Any]:
        """The `query` JSON for uploaded images; unreadable ones under `errors`."""
        with tempfile.TemporaryDirectory(prefix="karyosearch-query-") as tmp:
            paths, which, errors = stage(uploads, Path(tmp))
            if not paths:
                raise ApiError(400, none_read(len(uploads), errors), errors=errors)
            search = self.search
            emb = self.batcher.embed(paths)
            by_path = {p: uploads[i].name for p, i in zip(paths, which, strict=True)}
            errors += [{"file": by_path[e.path], "error": e.reason} for e in emb.errors]
            if not emb.paths:
                raise ApiError(400, none_read(len(uploads), errors), errors=errors)
            found = search.query_vectors(
                emb.embeddings, k, emb.scores, [by_path[p] for p in emb.paths]
            )
            results = []
            for path, r in zip(emb.paths, found, strict=True):
                out = r.to_dict()
                out["thumb"] = data_url(thumbnail(path))
                results.append(out)
        return {"results": results, "errors": errors}

    def karyotype(
        self,
        uploads: Sequence[Upload],
        k: int,
        fmt: str,
        with_png: bool,
        cell: str | None,
        corrections: dict[str, str] | None = None,
    ) -> dict[str, Any] | bytes:
        """The `karyotype` JSON of one cell's crops (or its karyogram PNG when fmt is png);
        `corrections` (file name -> class or "extra") are labels a person set, which the
        karyotype, counts and karyogram then follow."""
        with tempfile.TemporaryDirectory(prefix="karyosearch-cell-") as tmp:
            paths, which, errors = stage(uploads, Path(tmp))
            if not paths:
                raise ApiError(400, none_read(len(uploads), errors), errors=errors)
            by_path = {p: uploads[i].name for p, i in zip(paths, which, strict=True)}
            unknown = sorted(set(corrections or {}) - set(by_path.values()))
            if unknown:
                raise ApiError(400, f"labels for files not in this cell: {', '.join(unknown[:5])}")
            with self.encoder_lock:
                result = karyotype_cell(
                    self.encoder, paths, self.params, cell=cell, archive=self.search
                )
            model_labels = {c.path: ("extra" if c.extra else c.label) for c in result.crops}
            if corrections:
                result = corrected(result, {p: corrections.get(n) for p, n in by_path.items()})
            if fmt == "png":
                return self._render(result, Path(tmp))
            out = result.to_json()
            for crop in out["crops"]:
                crop["model_label"] = model_labels[crop["path"]]
                crop["corrected"] = crop["model_label"] != (
                    "extra" if crop["extra"] else crop["label"]
                )
            found = self.search.query_vectors(
                result.embeddings, k, queries=[c.path for c in result.crops]
            )
            for crop, r in zip(out["crops"], found, strict=True):
                crop["thumb"] = data_url(thumbnail(crop["path"]))
                crop["knn_label"] = r.knn_label
                crop["neighbours"] = r.to_dict()["neighbours"]
                crop["path"] = by_path[crop["path"]]
            for key in ("review", "extra"):
                out[key] = [by_path[p] for p in out[key]]
            out["skipped"] = errors + [
                {"file": by_path.get(s["path"], s["path"]), "error": s["reason"]}
                for s in out["skipped"]
            ]
            if with_png:
                out["karyogram"] = data_url(self._render(result, Path(tmp)))
        return out

    def _render(self, result: Any, tmp: Path) -> bytes:
        with self.render_lock:
            return render_karyogram(result, tmp / "karyogram.png").read_bytes()

    # -- writes (token only) --------------------------------------------------------------

    def add(self, uploads: Sequence[Upload], labels: Sequence[str], cell: str | None) -> dict:
        """Store labelled crops under the upload folder and index them (the library's atomic,
        locked update); returns its report, with unreadable files under `errors`."""
        if len(labels) == 1 and len(uploads) > 1:
            labels = list(labels) * len(uploads)
        if len(labels) != len(uploads):
            raise ApiError(400, f"{len(uploads)} files but {len(labels)} labels: one per file")
        try:
            indices = [class_index(lab) for lab in labels]
        except ValueError as err:
            raise ApiError(400, str(err)) from None
        with tempfile.TemporaryDirectory(prefix="karyosearch-add-") as tmp:
            paths, which, errors = stage(uploads, Path(tmp))
            items, stored = [], []
            for path, i in zip(paths, which, strict=True):
                data = Path(path).read_bytes()
                self.uploads_dir.mkdir(parents=True, exist_ok=True)
                target = self.uploads_dir / (hashlib.sha1(data).hexdigest() + Path(path).suffix)
                if not target.exists():
                    part = target.with_name(target.name + f".part-{secrets.token_hex(4)}")
                    part.write_bytes(data)
                    os.replace(part, target)
                items.append(Item(str(target.resolve()), indices[i], cell or None))
                stored.append(uploads[i].name)
        if not items:
            raise ApiError(400, none_read(len(uploads), errors), errors=errors)
        dataset = Dataset(self.uploads_dir, "upload", items)
        with self.write_lock, self.encoder_lock:
            report = build_or_update(self.index_dir, dataset, self.encoder)
            self._reopen()
        out = report.to_dict()
        out["errors"] = errors
        out["files"] = stored
        return out

    def delete(self, image_id: int) -> dict[str, Any]:
        path = self.path_of(image_id)
        with self.write_lock:
            report = remove(self.index_dir, [path])
            self._reopen()
        own = Path(path).parent == self.uploads_dir.resolve()
        if own:
            Path(path).unlink(missing_ok=True)
        return {"id": image_id, "removed": report.removed, "count": report.count}

    def _reopen(self) -> None:
        self.search = SearchIndex.open(self.index_dir, self.encoder)
        self._reindex()


def corrected(result: Any, labels: dict[str, str | None]) -> Any:
    """A cell's `CellKaryotype` with labels a person set (crop path -> class or "extra"; None
    keeps the model's): those crops carry the reason "corrected by hand", and the karyotype,
    counts, missing and odd classes are recounted (`recount`), with every crop's "unexpected
    count" as the new counts have it."""
    crops = []
    for crop in result.crops:
        want = labels.get(crop.path)
        if want is None or want == ("extra" if crop.extra else crop.label):
            crops.append(crop)
            continue
        extra = str(want).lower() == "extra"
        try:
            label = crop.argmax if extra else CLASS_NAMES[class_index(want)]
        except ValueError as err:
            raise ApiError(400, str(err)) from None
        crops.append(
            replace(crop, label=label, extra=extra, changed=False, reasons=["corrected by hand"])
        )
    counted = recount([{"path": c.path, "label": "extra" if c.extra else c.label} for c in crops])
    odd = set(counted["review_classes"])  # a count is unexpected after the correction, or not
    crops = [
        replace(
            c,
            reasons=[r for r in c.reasons if r != "unexpected count"]
            + (["unexpected count"] if c.label in odd and not c.extra else []),
        )
        for c in crops
    ]
    return replace(
        result,
        crops=crops,
        karyotype=counted["karyotype"],
        kind="normal" if counted["normal"] else counted["kind"],
        counts=counted["counts"],
        missing=counted["missing"],
        review_classes=counted["review_classes"],
        review=[c.path for c in crops if c.reasons],
    )
