"""The `karyosearch serve` command: parse the options, build the app, run it on uvicorn."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def serve(
    index: Annotated[
        Path,
        typer.Option(
            "--index",
            help="Index folder to search (built by `karyosearch index`).",
        ),
    ] = Path("indexes/default"),
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            dir_okay=False,
            help="Encoder checkpoint (.pt); default: the one that built the index (its card).",
        ),
    ] = None,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="Address to listen on. 127.0.0.1 (the default) answers this machine only; "
            "0.0.0.0 opens the server to the network: put it behind a proxy with TLS first.",
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 8000,
    write_token: Annotated[
        str | None,
        typer.Option(
            "--write-token",
            envvar="KARYOSEARCH_WRITE_TOKEN",
            help="Allow writes (POST /api/index, DELETE /api/images/{id}) to requests that "
            "carry this token in an X-Write-Token header. Without it the server is read-only. "
            "Prefer the environment variable: a command line is visible to other users.",
            show_default=False,
        ),
    ] = None,
    uploads: Annotated[
        Path | None,
        typer.Option(
            "--uploads",
            file_okay=False,
            help="Where crops archived through POST /api/index are kept (default: a folder "
            "INDEX.uploads beside the index).",
        ),
    ] = None,
    max_files: Annotated[
        int, typer.Option("--max-files", min=1, help="Images per request (a zip counts its files).")
    ] = 64,
    max_file_mb: Annotated[
        float, typer.Option("--max-file-mb", min=0.01, help="Largest image (or zip) in MiB.")
    ] = 8.0,
    max_request_mb: Annotated[
        float, typer.Option("--max-request-mb", min=0.01, help="Largest request body in MiB.")
    ] = 64.0,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--cors-origin",
            help="Let pages from this origin (e.g. https://lims.example.org) call the API from "
            "a browser. Repeatable; off by default.",
        ),
    ] = None,
) -> None:
    """Serve the index over HTTP: an API for a lab's software and a web page for people.

    Open http://HOST:PORT/ in a browser, drop chromosome crops (or a whole cell's folder)
    on the page: each crop gets its class and confidence, a click shows the most similar
    archived chromosomes; a cell gets its karyotype and karyogram, with the crops to review
    marked, and a corrected class recounts the karyotype and exports as CSV or JSON.

    The API (interactive documentation at /docs): POST /api/query and /api/karyotype take
    image uploads (multipart field `files`; a cell may be one zip), GET /api/images/{id}
    and /api/images/{id}/thumb return archived images by id, GET /api/index the index card,
    GET /health a liveness answer. Errors are JSON {"error": message}.

    Example: `karyosearch serve --index indexes/demo`, then
    `curl -F files=@crop.png http://127.0.0.1:8000/api/query`.
    """

    def fail(message: str) -> typer.Exit:
        typer.echo(f"error: {message}", err=True)
        return typer.Exit(1)

    try:
        import uvicorn

        from .app import Limits, create_app
        from .library import UserError
    except ImportError as err:
        raise fail(
            f"the server needs fastapi and uvicorn ({err}); pip install karyosearch"
        ) from None
    limits = Limits(
        max_file_bytes=int(max_file_mb * (1 << 20)),
        max_files=max_files,
        max_request_bytes=int(max_request_mb * (1 << 20)),
    )
    try:
        app = create_app(index, model, write_token or None, limits, uploads, cors_origin or ())
    except UserError as err:
        raise fail(str(err)) from None
    card = app.state.engine.search.card
    typer.echo(
        f"serving {index} ({card.count} images, {card.arch}, model {card.model_fingerprint}) "
        f"on http://{host}:{port}/  writes {'on' if write_token else 'off'}",
        err=True,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
