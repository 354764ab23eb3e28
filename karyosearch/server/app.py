"""The HTTP API and web page of `karyosearch serve`: an ASGI app made by `create_app`.

```python
from karyosearch.server.app import create_app
app = create_app("indexes/demo", "models/bioimlab-proxy-resnext-cbam-64px.pt")
# uvicorn.run(app, host="127.0.0.1", port=8000)
```

Routes (every error is JSON `{"error": message}` with a 4xx status, never an HTML page):

- `POST /api/query` (multipart `files`, `?k=8`): per image, the `query` JSON of the CLI
  (class, cosine, margin, neighbours' vote, k neighbours), plus a display thumbnail; files
  that are no image are listed under `errors` and the others answered.
- `POST /api/karyotype` (several `files`, or one zip): the `karyotype` JSON of the CLI, each
  crop with its neighbours; `?format=png` answers the karyogram itself, `?karyogram=true`
  adds it to the JSON as a data URL.
- `POST /api/karyotype/recount` (JSON `{"crops": [{"path", "label"}]}`): the karyotype of
  labels a person corrected (the library's counting and ISCN code; nothing re-embedded).
- `GET /api/images/{id}`, `GET /api/images/{id}/thumb`: an indexed image by its int64 id
  (the only way to name a file; no client path is ever opened).
- `GET /api/index` (the card), `GET /health`, `GET /docs` (OpenAPI), `GET /` (the page).
- With a write token only: `POST /api/index` (labelled crops to archive) and
  `DELETE /api/images/{id}`, through the library's atomic, locked index writes.

The encoder runs on a worker thread under one lock, so the event loop (and `/health`) keeps
answering while a cell is embedded.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import queue
import re
import secrets
import tempfile
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from .library import (
    CLASS_NAMES,
    IMAGE_SUFFIXES,
    MAX_CELL_IMAGES,
    Dataset,
    EmbeddedFiles,
    ImageError,
    Item,
    SearchIndex,
    UserError,
    build_or_update,
    class_index,
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

log = logging.getLogger("karyosearch.server")
STATIC_DIR = Path(__file__).parent / "static"
THUMB_BOX = 160  # px: thumbnails fit in a THUMB_BOX x THUMB_BOX square
WRITE_PATHS = ("/api/index", "/api/images/")


@dataclass
class Limits:
    """What one request may carry; beyond it the request is refused with 413."""

    max_file_bytes: int = 8 << 20  # one uploaded image, or one member of a zip
    max_files: int = 64  # images per request (a cell has 46; a zip counts its members)
    max_request_bytes: int = 64 << 20  # the whole request body (and a zip's unpacked total)
    max_k: int = 50  # neighbours per query image


class ApiError(Exception):
    """An error answered as `{"error": message}` with an HTTP status."""

    def __init__(self, status: int, message: str, **extra: Any):
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


@dataclass
class Upload:
    """One uploaded image: the name the client gave (shown, never opened) and its bytes."""

    name: str
    data: bytes


def clean_name(raw: str | None, fallback: str) -> str:
    """A client's file name made safe to show: forward slashes, no `..`, no leading `/`."""
    parts = [p for p in re.split(r"[\\/]+", raw or "") if p not in ("", ".", "..")]
    name = "/".join(parts[-3:])[-200:]
    return "".join(ch for ch in name if ch.isprintable()) or fallback


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
        self.thread = threading.Thread(target=self._run, name="karyosearch-embed", daemon=True)
        self.thread.start()

    def embed(self, paths: list[str]) -> EmbeddedFiles:
        """`embed_files(encoder, paths)`, batched with other requests' images."""
        done: Future = Future()
        self.jobs.put((paths, done))
        return done.result()

    def _warm_up(self) -> None:
        cfg = self.encoder.cfg
        channels = (2,) if cfg.canvas else ()
        for n in self.BUCKETS:
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
        while True:
            jobs = [self.jobs.get()]
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
        return self.search.card.to_dict()

    def query(self, uploads: Sequence[Upload], k: int) -> dict[str, Any]:
        """The `query` JSON for uploaded images; unreadable ones under `errors`."""
        with tempfile.TemporaryDirectory(prefix="karyosearch-query-") as tmp:
            paths, which, errors = stage(uploads, Path(tmp))
            if not paths:
                raise ApiError(400, _none_read(len(uploads), errors), errors=errors)
            search = self.search
            emb = self.batcher.embed(paths)
            by_path = {p: uploads[i].name for p, i in zip(paths, which, strict=True)}
            errors += [{"file": by_path[e.path], "error": e.reason} for e in emb.errors]
            if not emb.paths:
                raise ApiError(400, _none_read(len(uploads), errors), errors=errors)
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
                raise ApiError(400, _none_read(len(uploads), errors), errors=errors)
            by_path = {p: uploads[i].name for p, i in zip(paths, which, strict=True)}
            unknown = sorted(set(corrections or {}) - set(by_path.values()))
            if unknown:
                raise ApiError(400, f"labels for files not in this cell: {', '.join(unknown[:5])}")
            with self.encoder_lock:
                result = karyotype_cell(self.encoder, paths, self.params, cell=cell)
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
            raise ApiError(400, _none_read(len(uploads), errors), errors=errors)
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


def _none_read(n: int, errors: list[dict[str, str]]) -> str:
    first = f"; {errors[0]['file']}: {errors[0]['error']}" if errors else ""
    return f"none of the {n} file(s) could be read as a chromosome image{first}"


def stage(uploads: Sequence[Upload], folder: Path) -> tuple[list[str], list[int], list[dict]]:
    """Write uploads to `folder` under names of the server's own making (`000.png`...), so no
    client name reaches the file system, and check each with the image pipeline (`load`:
    format, size, decompression-bomb guard, a chromosome on a background).

    Returns the paths of the readable ones, their positions in `uploads`, and
    `{"file", "error"}` for the others.
    """
    paths, which, errors = [], [], []
    for i, up in enumerate(uploads):
        suffix = Path(up.name).suffix.lower()
        if suffix not in IMAGE_SUFFIXES:
            expected = ", ".join(sorted(IMAGE_SUFFIXES))
            reason = f"not an image file ({suffix or 'no suffix'}); expected {expected}"
            errors.append({"file": up.name, "error": reason})
            continue
        path = folder / f"{i:03d}{suffix}"
        path.write_bytes(up.data)
        try:
            load(path)
        except ImageError as err:
            errors.append({"file": up.name, "error": err.reason})
            continue
        paths.append(str(path))
        which.append(i)
    return paths, which, errors


def unique_names(uploads: Sequence[Upload]) -> list[Upload]:
    """Uploads with distinct names (two crops of one name from two folders of a zip: `a.png`,
    `a (2).png`), so that each result names one file."""
    seen: dict[str, int] = {}
    out = []
    for up in uploads:
        n = seen.get(up.name, 0) + 1
        seen[up.name] = n
        stem, suffix = os.path.splitext(up.name)
        out.append(up if n == 1 else Upload(f"{stem} ({n}){suffix}", up.data))
    return out


async def read_uploads(request: Request, limits: Limits) -> tuple[list[Upload], Any]:
    """The `files` of a multipart request (a zip stands for its members), within the limits,
    and the form (for its other fields)."""
    if "multipart/form-data" not in request.headers.get("content-type", ""):
        raise ApiError(415, "send the images as multipart/form-data, field 'files'")
    try:
        form = await request.form(max_files=limits.max_files, max_fields=limits.max_files + 16)
    except StarletteHTTPException as err:
        if "Too many" in str(err.detail):
            raise ApiError(413, f"too many files: at most {limits.max_files} per request") from None
        raise ApiError(400, f"unreadable form: {err.detail}") from None
    uploads: list[Upload] = []
    for field_name, value in form.multi_items():
        if not isinstance(value, UploadFile):
            continue
        if field_name != "files":
            raise ApiError(400, f"unexpected file field {field_name!r}; send images as 'files'")
        name = clean_name(value.filename, f"file {len(uploads) + 1}")
        data = await value.read(limits.max_file_bytes + 1)
        if len(data) > limits.max_file_bytes:
            raise ApiError(413, f"{name}: larger than {limits.max_file_bytes} bytes")
        if name.lower().endswith(".zip"):
            uploads += unzip(name, data, limits)
        else:
            uploads.append(Upload(name, data))
        if len(uploads) > limits.max_files:
            raise ApiError(413, f"too many files: at most {limits.max_files} per request")
    if not uploads:
        raise ApiError(400, "no images: send them as multipart/form-data, field 'files'")
    return unique_names(uploads), form


def unzip(name: str, data: bytes, limits: Limits) -> list[Upload]:
    """The members of a zip of crops (folders, hidden and `__MACOSX` files skipped), each and
    all together within the limits whatever the archive claims."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise ApiError(400, f"{name}: not a readable zip archive") from None
    out, total = [], 0
    with archive:
        for info in archive.infolist():
            base = info.filename.rsplit("/", 1)[-1]
            if info.is_dir() or base.startswith(".") or info.filename.startswith("__MACOSX/"):
                continue
            if len(out) >= limits.max_files:
                raise ApiError(413, f"{name}: more than {limits.max_files} files")
            member = clean_name(info.filename, f"{name} member {len(out) + 1}")
            if info.file_size > limits.max_file_bytes:
                raise ApiError(413, f"{member}: larger than {limits.max_file_bytes} bytes")
            try:
                with archive.open(info) as fh:
                    blob = fh.read(limits.max_file_bytes + 1)
            except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError) as err:
                raise ApiError(400, f"{member}: cannot be unpacked ({err})") from None
            total += len(blob)
            if len(blob) > limits.max_file_bytes:
                raise ApiError(413, f"{member}: larger than {limits.max_file_bytes} bytes")
            if total > limits.max_request_bytes:
                raise ApiError(
                    413, f"{name}: unpacks to more than {limits.max_request_bytes} bytes"
                )
            out.append(Upload(member, blob))
    return out


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


_MULTIPART = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "Chromosome crops (.png .bmp .tif .jpg) or one .zip",
                        }
                    },
                }
            }
        },
    }
}


def create_app(
    index_dir: str | os.PathLike,
    model: str | os.PathLike | None = None,
    write_token: str | None = None,
    limits: Limits | None = None,
    uploads_dir: str | os.PathLike | None = None,
    cors_origins: Sequence[str] = (),
    warm_up: bool = True,
) -> FastAPI:
    """The app serving the index at `index_dir`, embedding with `model` (default: the
    checkpoint that built the index). Writes exist only with a `write_token`; CORS is off
    unless `cors_origins` are given. `warm_up` runs the encoder once per batch size at start
    (a few seconds on a worker thread; see `Batcher`)."""
    limits = limits or Limits()
    engine = Engine(index_dir, model, uploads_dir, warm_up)
    app = FastAPI(
        title="karyosearch",
        description="Name chromosome crops, find their archived look-alikes, karyotype a cell.",
        version="1",
    )
    app.state.engine = engine
    app.state.limits = limits

    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"]
        )

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        if request.method in ("POST", "PUT", "PATCH"):
            length = request.headers.get("content-length")
            if length is None:
                if request.headers.get("transfer-encoding", "").lower() == "chunked":
                    return _error(411, "send a Content-Length (chunked uploads are not taken)")
            elif not length.isdigit():
                return _error(400, "bad Content-Length")
            elif int(length) > limits.max_request_bytes:
                return _error(
                    413,
                    f"request of {int(length)} bytes is larger than the "
                    f"{limits.max_request_bytes} bytes a request may carry",
                )
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        if request.url.path == "/" or request.url.path.startswith("/static/"):
            response.headers["Content-Security-Policy"] = (
                "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                "script-src 'self'; frame-ancestors 'none'"
            )
        return response

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        return _error(err.status, err.message, **err.extra)

    @app.exception_handler(UserError)
    async def user_error(request: Request, err: UserError) -> JSONResponse:
        return _error(400, str(err))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        parts = []
        for e in err.errors():
            where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("path", "query"))
            parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else e.get("msg", ""))
        return _error(422, "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        message = str(err.detail)
        path = request.url.path
        if err.status_code == 404:
            message = f"no such route: {request.method} {path}"
        if err.status_code == 405 and request.method in ("POST", "DELETE"):
            if write_token is None and path.startswith(WRITE_PATHS):
                message = (
                    f"{request.method} {path}: writes are off; start the server with "
                    "--write-token (or KARYOSEARCH_WRITE_TOKEN) to allow them"
                )
            else:
                message = f"{request.method} is not allowed on {path}"
        return _error(err.status_code, message)

    @app.exception_handler(Exception)
    async def crash(request: Request, err: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return _error(500, "internal server error; the server's log has the details")

    # -- page -----------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    # -- reads ----------------------------------------------------------------------------

    @app.get("/health", summary="Liveness: answers even while the encoder is busy")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "count": len(engine.search)}

    @app.get("/api/index", summary="The index card: model, count, factory, created/updated")
    async def index_card() -> dict[str, Any]:
        card = engine.card()
        card["writes"] = write_token is not None
        card["limits"] = asdict(limits)
        card["classes"] = list(CLASS_NAMES)
        card["max_cell_images"] = MAX_CELL_IMAGES
        return card

    @app.get(
        "/api/images/{image_id}",
        summary="An indexed image (as PNG) by its id",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}},
    )
    async def image(image_id: int) -> Response:
        png = await run_in_threadpool(engine.image_png, image_id)
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @app.get(
        "/api/images/{image_id}/thumb",
        summary="An indexed image's thumbnail: cropped, dark on light, at most 160 px",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}},
    )
    async def thumb(image_id: int) -> Response:
        png = await run_in_threadpool(engine.thumb_png, image_id)
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @app.post(
        "/api/query",
        summary="Name chromosome crops and find their k nearest archived crops",
        openapi_extra=_MULTIPART,
    )
    async def query(request: Request, k: int = Query(8, ge=1)) -> dict[str, Any]:
        if k > limits.max_k:
            raise ApiError(400, f"k is at most {limits.max_k}")
        uploads, _ = await read_uploads(request, limits)
        return await run_in_threadpool(engine.query, uploads, k)

    @app.post(
        "/api/karyotype",
        summary="Karyotype one cell from its crops (files or one zip); an optional form field "
        "`labels` (JSON: file name -> class) applies a person's corrections",
        openapi_extra=_MULTIPART,
        responses={200: {"content": {"application/json": {}, "image/png": {}}}},
    )
    async def karyotype(
        request: Request,
        format: str = Query("json", pattern="^(json|png)$"),
        karyogram: bool = Query(False, description="add the karyogram PNG as a data URL"),
        k: int = Query(6, ge=1),
        cell: str | None = Query(None, max_length=200, description="a name for the cell"),
    ) -> Any:
        if k > limits.max_k:
            raise ApiError(400, f"k is at most {limits.max_k}")
        uploads, form = await read_uploads(request, limits)
        if len(uploads) > MAX_CELL_IMAGES:
            raise ApiError(
                413, f"{len(uploads)} images are too many for one cell (at most {MAX_CELL_IMAGES})"
            )
        name = clean_name(cell, "") or None
        raw = form.get("labels")
        try:
            labels = json.loads(raw) if isinstance(raw, str) and raw.strip() else None
        except ValueError:
            labels = "bad"
        if labels is not None and not (
            isinstance(labels, dict) and all(isinstance(v, str) for v in labels.values())
        ):
            raise ApiError(400, "labels: a JSON object of file name -> class ('21', 'X', 'extra')")
        out = await run_in_threadpool(engine.karyotype, uploads, k, format, karyogram, name, labels)
        if isinstance(out, bytes):
            return Response(out, media_type="image/png")
        return out

    @app.post(
        "/api/karyotype/recount",
        summary="The karyotype of crops whose labels a person corrected",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "example": {"crops": [{"path": "1 21a.bmp", "label": "21"}]},
                    }
                },
            }
        },
    )
    async def recount_route(request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise ApiError(
                400, "expected JSON: {'crops': [{'path': name, 'label': '21'}]}"
            ) from None
        crops = body.get("crops") if isinstance(body, dict) else None
        if not isinstance(crops, list):
            raise ApiError(400, "expected JSON: {'crops': [{'path': name, 'label': '21'}]}")
        if len(crops) > MAX_CELL_IMAGES:
            raise ApiError(413, f"{len(crops)} crops are too many for one cell")
        return recount(crops)

    # -- writes ---------------------------------------------------------------------------

    if write_token is not None:

        def check_token(request: Request) -> None:
            given = request.headers.get("x-write-token", "")
            auth = request.headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                given = given or auth[7:].strip()
            if not given:
                raise ApiError(401, "this write needs the server's token (X-Write-Token header)")
            if not secrets.compare_digest(given.encode(), write_token.encode()):
                raise ApiError(403, "wrong write token")

        @app.post(
            "/api/index",
            summary="Archive labelled crops (token only): fields files, label (one per file "
            "or one for all), cell",
            openapi_extra=_MULTIPART,
        )
        async def add_images(request: Request) -> dict[str, Any]:
            check_token(request)
            uploads, form = await read_uploads(request, limits)
            labels = [str(v) for v in form.getlist("label")]
            cell = form.get("cell")
            cell_id = clean_name(str(cell), "") if isinstance(cell, str) else None
            return await run_in_threadpool(engine.add, uploads, labels, cell_id)

        @app.delete("/api/images/{image_id}", summary="Drop an image from the index (token only)")
        async def delete_image(request: Request, image_id: int) -> dict[str, Any]:
            check_token(request)
            return await run_in_threadpool(engine.delete, image_id)

    return app
