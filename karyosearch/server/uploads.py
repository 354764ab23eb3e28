"""Uploads of `karyosearch serve`: limits, multipart and zip reading, staging to a temporary folder,
and the API error every bad request becomes."""

from __future__ import annotations

import io
import logging
import os
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from .library import (
    IMAGE_SUFFIXES,
    ImageError,
    load,
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


def none_read(n: int, errors: list[dict[str, str]]) -> str:
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
