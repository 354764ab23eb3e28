"""The HTTP API and web page of `karyosearch serve`: an ASGI app made by `create_app`.

```python
from karyosearch.server.app import create_app
app = create_app("indexes/demo", "models/bioimlab-proxy-resnext-cbam-128px.pt")
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

import contextlib
import json
import logging
import os
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .library import (
    CLASS_NAMES,
    MAX_CELL_IMAGES,
    UserError,
)
from .service import Engine, recount
from .uploads import ApiError, Limits, clean_name, read_uploads

log = logging.getLogger("karyosearch.server")
STATIC_DIR = Path(__file__).parent / "static"
THUMB_BOX = 160  # px: thumbnails fit in a THUMB_BOX x THUMB_BOX square
WRITE_PATHS = ("/api/index", "/api/images/")


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

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(engine.batcher.close)  # the encoder thread ends before we do

    app = FastAPI(
        lifespan=lifespan,
        docs_url=None,  # served below from the swagger-ui-bundle package: no CDN needed
        title="karyosearch",
        description="Name chromosome crops, find their archived look-alikes, karyotype a cell.",
        version="1",
    )
    # The bundled Swagger UI (4.15) reads OpenAPI 3.0 only; the schema uses nothing of 3.1.
    app.openapi_version = "3.0.3"
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

    import swagger_ui_bundle
    from fastapi.openapi.docs import get_swagger_ui_html

    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), "docs")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        """The interactive API documentation, its scripts served here (works offline)."""
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="karyosearch API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )

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
