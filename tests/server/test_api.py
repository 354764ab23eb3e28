"""The HTTP API against a small real index: every route, the token rule, the upload limits,
bad files among good ones, path traversal on every route taking an id, errors as JSON."""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ..conftest import chromosome_array
from .conftest import MODEL, QUERY_CELL, TOKEN, cell_files

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CONTRACT_QUERY = {"query", "predicted", "knn_label", "neighbours"}
CONTRACT_NEIGHBOUR = {"rank", "id", "score", "label", "path", "cell_id"}
TRAVERSALS = (
    "../../etc/passwd",
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%252e%252e%252fetc%252fpasswd",
    "/etc/passwd",
    "%2Fetc%2Fpasswd",
    "..\\..\\etc\\passwd",
    "1/../../../etc/passwd",
    "1%00",
    "-1",
    "0x1",
    "1e3",
    "99999999999999999999999",
)


def crop_file(name: str) -> tuple[str, tuple[str, bytes, str]]:
    path = next(p for p in cell_files(QUERY_CELL) if p.name == name)
    return ("files", (path.name, path.read_bytes(), "image/bmp"))


def cell_upload(cell: str = QUERY_CELL) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (p.name, p.read_bytes(), "image/bmp")) for p in cell_files(cell)]


def png_of(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def assert_json_error(response, status: int | None = None) -> dict:
    assert response.headers["content-type"].startswith("application/json"), response.text[:200]
    body = response.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    assert "Traceback" not in response.text and "<html" not in response.text.lower()
    if status is not None:
        assert response.status_code == status, (response.status_code, body)
    else:
        assert 400 <= response.status_code < 500, (response.status_code, body)
    return body


@pytest.fixture
def small_limits(app):
    """The session app's limits lowered for one test, then put back."""
    limits = app.state.limits
    saved = (limits.max_files, limits.max_file_bytes, limits.max_request_bytes)
    limits.max_files, limits.max_file_bytes, limits.max_request_bytes = 3, 50_000, 200_000
    yield limits
    limits.max_files, limits.max_file_bytes, limits.max_request_bytes = saved


# -- reads ---------------------------------------------------------------------------------


def test_health_and_card(client) -> None:
    assert client.get("/health").json() == {"status": "ok", "count": 92}
    card = client.get("/api/index").json()
    for key in ("model_fingerprint", "arch", "count", "factory", "created", "updated"):
        assert key in card
    assert card["count"] == 92 and card["factory"] == "Flat" and card["writes"] is False
    assert card["classes"][-2:] == ["X", "Y"]
    # what the archive call chose, recorded when the index was built, and in words
    assert card["archive"]["model_fingerprint"] == card["model_fingerprint"]
    assert card["archive_note"].startswith("archive call: ")


def test_docs_and_openapi(client) -> None:
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "/docs-assets/swagger-ui-bundle.js" in docs.text and "cdn" not in docs.text.lower()
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert client.get(f"/docs-assets/{asset}").status_code == 200  # no CDN: works offline
    schema = client.get("/openapi.json").json()
    assert schema["openapi"].startswith("3.0")  # what the bundled Swagger UI renders
    paths = schema["paths"]
    for route in ("/api/query", "/api/karyotype", "/api/index", "/api/images/{image_id}/thumb"):
        assert route in paths
    assert "post" not in paths["/api/index"]  # no writes without a token


def test_page_and_static(client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/static/app.js").status_code == 200


def test_query_one_crop(client) -> None:
    r = client.post("/api/query?k=5", files=[crop_file(f"{QUERY_CELL} 21b.bmp")])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["errors"] == []
    (res,) = body["results"]
    assert CONTRACT_QUERY <= set(res)
    assert res["query"] == f"{QUERY_CELL} 21b.bmp"
    assert res["predicted"]["label"] == "21" and res["knn_label"] == "21"
    assert -1 <= res["predicted"]["score"] <= 1 and res["predicted"]["margin"] >= 0
    assert [n["rank"] for n in res["neighbours"]] == [1, 2, 3, 4, 5]
    assert all(CONTRACT_NEIGHBOUR <= set(n) for n in res["neighbours"])
    assert res["neighbours"][0]["label"] == "21"
    assert res["thumb"].startswith("data:image/png;base64,")


def test_corrupt_upload_among_good_ones(client, tmp_path: Path) -> None:
    good = [crop_file(f"{QUERY_CELL} 1a.bmp"), crop_file(f"{QUERY_CELL} 9b.bmp")]
    truncated = good[0][1][1][:300]
    files = [
        good[0],
        ("files", ("truncated.bmp", truncated, "image/bmp")),
        ("files", ("notes.txt", b"hello", "text/plain")),
        ("files", ("fake.png", b"\x89PNG not really", "image/png")),
        ("files", ("blank.png", png_of(np.zeros((30, 20), np.uint8)), "image/png")),
        ("files", ("empty.png", b"", "image/png")),
        good[1],
    ]
    r = client.post("/api/query", files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [res["query"] for res in body["results"]] == [good[0][1][0], good[1][1][0]]
    errors = {e["file"]: e["error"] for e in body["errors"]}
    assert set(errors) == {"truncated.bmp", "notes.txt", "fake.png", "blank.png", "empty.png"}
    assert "not an image file" in errors["notes.txt"]
    assert "background" in errors["blank.png"]
    assert all(str(tmp_path) not in e and "/tmp" not in e for e in errors.values())


def test_decompression_bomb_is_a_per_file_error(client) -> None:
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, format="PNG")  # 50 MB of pixels in a few KB
    assert len(buf.getvalue()) < 200_000
    files = [
        ("files", ("bomb.png", buf.getvalue(), "image/png")),
        crop_file(f"{QUERY_CELL} 2a.bmp"),
    ]
    body = client.post("/api/query", files=files).json()
    assert len(body["results"]) == 1
    assert body["errors"][0]["file"] == "bomb.png" and "px a side" in body["errors"][0]["error"]


def test_query_refusals(client) -> None:
    assert_json_error(client.post("/api/query", files=[("files", ("a.txt", b"x", "text/plain"))]))
    assert_json_error(client.post("/api/query", data={"x": "1"}), 415)
    assert_json_error(client.post("/api/query", json={"files": []}), 415)
    assert_json_error(client.post("/api/query?k=0", files=[crop_file(f"{QUERY_CELL} 1a.bmp")]), 422)
    assert_json_error(client.post("/api/query?k=51", files=[crop_file(f"{QUERY_CELL} 1a.bmp")]))
    other = [("other", ("a.bmp", b"x", "image/bmp"))]
    assert_json_error(client.post("/api/query", files=other), 400)


def test_upload_limits(client, small_limits) -> None:
    four = [crop_file(f"{QUERY_CELL} {c}a.bmp") for c in (1, 2, 3, 4)]
    body = assert_json_error(client.post("/api/query", files=four), 413)
    assert "at most 3" in body["error"]
    big = ("files", ("big.png", png_of(chromosome_array(400, 200)) + b"\0" * 60_000, "image/png"))
    assert "larger than" in assert_json_error(client.post("/api/query", files=[big]), 413)["error"]
    huge = [("files", (f"{i}.png", b"\0" * 45_000, "image/png")) for i in range(5)]
    body = assert_json_error(client.post("/api/query", files=huge), 413)
    assert "bytes" in body["error"]
    # the same refusals for a zip: its members count, and their unpacked sizes
    assert_json_error(client.post("/api/karyotype", files=[zip_of(four)]), 413)
    bomb = zip_of([("files", ("zeros.bmp", b"\0" * 5_000_000, "image/bmp"))])
    assert len(bomb[1][1]) < 50_000
    assert (
        "larger than"
        in assert_json_error(client.post("/api/karyotype", files=[bomb]), 413)["error"]
    )
    # a lying Content-Length is refused before the body is read
    r = client.post(
        "/api/query",
        content=b"x" * 10,
        headers={"content-length": "999999999", "content-type": "multipart/form-data; boundary=x"},
    )
    assert_json_error(r, 413)


def zip_of(files, names=None) -> tuple[str, tuple[str, bytes, str]]:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, (_, (name, data, _)) in enumerate(files):
            zf.writestr(names[i] if names else f"cell/{name}", data)
        zf.writestr("__MACOSX/._junk", b"junk")
        zf.writestr("cell/.DS_Store", b"junk")
        zf.writestr("cell/sub/", b"")
    return ("files", ("cell.zip", buf.getvalue(), "application/zip"))


# -- karyotype -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cell_result(client) -> dict:
    files = cell_upload() + [("files", ("broken.bmp", b"BM\0\0", "image/bmp"))]
    r = client.post("/api/karyotype?karyogram=true&k=3", files=files)
    assert r.status_code == 200, r.text
    return r.json()


def test_karyotype_of_a_cell(cell_result: dict) -> None:
    r = cell_result
    names = {p.name for p in cell_files(QUERY_CELL)}
    assert r["karyotype"] == "46,XX" and r["normal"] is True
    assert sum(r["counts"].values()) == 46 and len(r["crops"]) == 46
    assert {c["path"] for c in r["crops"]} == names
    for c in r["crops"]:
        assert {"path", "label", "confidence", "changed", "review", "neighbours"} <= set(c)
        assert len(c["neighbours"]) == 3 and CONTRACT_NEIGHBOUR <= set(c["neighbours"][0])
        assert c["thumb"].startswith("data:image/png;base64,")
    assert set(r["review"]) <= names
    assert r["skipped"] == [{"file": "broken.bmp", "error": r["skipped"][0]["error"]}]
    assert r["karyogram"].startswith("data:image/png;base64,")
    assert "/tmp" not in str(r["crops"]) + str(r["review"]) + str(r["skipped"])


def test_karyotype_png_and_zip(client, cell_result: dict) -> None:
    r = client.post("/api/karyotype?format=png", files=cell_upload())
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content.startswith(PNG_MAGIC)
    files = cell_upload()
    evil = [
        f"../../../../tmp/evil/{f[1][0]}" if i % 2 else f"/abs/{f[1][0]}"
        for i, f in enumerate(files)
    ]
    z = client.post("/api/karyotype", files=[zip_of(files, evil)])
    assert z.status_code == 200, z.text
    body = z.json()
    assert body["karyotype"] == cell_result["karyotype"]
    assert all(".." not in c["path"] and not c["path"].startswith("/") for c in body["crops"])
    assert not Path("/tmp/evil").exists()


def test_karyotype_refusals(client) -> None:
    assert_json_error(client.post("/api/karyotype", files=[("files", ("a.zip", b"PK nope", "x"))]))
    too_many = cell_upload() + cell_upload("31")[:20]
    assert_json_error(client.post("/api/karyotype", files=too_many), 413)
    assert_json_error(client.post("/api/karyotype?format=svg", files=cell_upload()[:2]), 422)
    bad = [("files", ("x.png", b"nope", "image/png"))]
    assert "could be read" in assert_json_error(client.post("/api/karyotype", files=bad))["error"]


def test_recount_after_a_correction(client, cell_result: dict) -> None:
    crops = [{"path": c["path"], "label": c["label"]} for c in cell_result["crops"]]
    same = client.post("/api/karyotype/recount", json={"crops": crops}).json()
    assert same["karyotype"] == cell_result["karyotype"] and same["counts"] == cell_result["counts"]
    i = next(i for i, c in enumerate(crops) if c["label"] == "22")
    crops[i]["label"] = "21"
    fixed = client.post("/api/karyotype/recount", json={"crops": crops}).json()
    assert fixed["karyotype"] == "47,XX,+21"  # a third 21; the lone 22 is a crop not cut out
    assert fixed["missing"] == ["22"] and set(fixed["review_classes"]) == {"21", "22"}
    crops[i]["label"] = "extra"
    out = client.post("/api/karyotype/recount", json={"crops": crops}).json()
    assert out["karyotype"] == "46,XX" and out["extra"] == [crops[i]["path"]]
    x = [c for c in crops if c["label"] == "X"]
    x[0]["label"] = "Y"
    assert (
        client.post("/api/karyotype/recount", json={"crops": crops}).json()["karyotype"] == "46,XY"
    )
    crops[0]["label"] = "25"
    assert (
        "25"
        in assert_json_error(client.post("/api/karyotype/recount", json={"crops": crops}), 400)[
            "error"
        ]
    )
    assert_json_error(client.post("/api/karyotype/recount", json={"crops": []}), 400)
    assert_json_error(client.post("/api/karyotype/recount", content=b"{nope"), 400)
    assert_json_error(client.post("/api/karyotype/recount", json=[1, 2]), 400)


def test_karyotype_with_corrected_labels(client, cell_result: dict) -> None:
    a22 = next(c["path"] for c in cell_result["crops"] if c["label"] == "22")
    files = cell_upload()
    r = client.post("/api/karyotype?k=1", files=files, data={"labels": json.dumps({a22: "21"})})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["karyotype"] == "47,XX,+21" and body["missing"] == ["22"]
    (crop,) = [c for c in body["crops"] if c["path"] == a22]
    assert crop["label"] == "21" and crop["model_label"] == "22" and crop["corrected"]
    assert crop["review"] == ["corrected by hand", "unexpected count"] and a22 in body["review"]
    assert sum(c["corrected"] for c in body["crops"]) == 1
    png = client.post(
        "/api/karyotype?format=png", files=files, data={"labels": json.dumps({a22: "extra"})}
    )
    assert png.status_code == 200 and png.content.startswith(PNG_MAGIC)
    for bad in ("{nope", json.dumps([1]), json.dumps({a22: 21}), json.dumps({"other.bmp": "1"})):
        assert_json_error(client.post("/api/karyotype", files=files, data={"labels": bad}), 400)
    assert_json_error(
        client.post("/api/karyotype", files=files, data={"labels": json.dumps({a22: "25"})}), 400
    )


# -- images by id --------------------------------------------------------------------------


def test_image_and_thumb_by_id(client) -> None:
    full = client.get("/api/images/0")
    assert full.status_code == 200 and full.content.startswith(PNG_MAGIC)
    thumb = client.get("/api/images/0/thumb")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png"
    im = Image.open(io.BytesIO(thumb.content))
    assert max(im.size) <= 160 and np.asarray(im)[0, 0] > 200  # dark on light
    assert_json_error(client.get("/api/images/92"), 404)
    assert_json_error(client.get("/api/images/92/thumb"), 404)


@pytest.mark.parametrize("evil", TRAVERSALS)
def test_path_traversal_on_read_routes(client, evil: str) -> None:
    for route in (f"/api/images/{evil}", f"/api/images/{evil}/thumb"):
        r = client.get(route)
        assert_json_error(r)
        assert b"root:" not in r.content


@pytest.mark.parametrize("evil", TRAVERSALS)
def test_path_traversal_on_delete(write_client, evil: str) -> None:
    r = write_client.delete(f"/api/images/{evil}", headers={"X-Write-Token": TOKEN})
    assert_json_error(r)
    assert write_client.get("/health").json()["count"] == 92


def test_file_on_disk_gone(client, app) -> None:
    paths = app.state.engine.search.rows.paths
    saved, paths[5] = paths[5], "/nonexistent/5.bmp"
    try:
        for route in ("/api/images/5", "/api/images/5/thumb"):
            assert "cannot be read" in assert_json_error(client.get(route), 404)["error"]
    finally:
        paths[5] = saved


# -- writes --------------------------------------------------------------------------------


def test_writes_are_off_without_a_token(client) -> None:
    files = [crop_file(f"{QUERY_CELL} 1a.bmp")]
    body = assert_json_error(client.post("/api/index", files=files, data={"label": "1"}), 405)
    assert "--write-token" in body["error"]
    assert "--write-token" in assert_json_error(client.delete("/api/images/1"), 405)["error"]
    assert client.get("/health").json()["count"] == 92


def test_writes_need_the_token(write_client) -> None:
    files = [crop_file(f"{QUERY_CELL} 1a.bmp")]
    assert_json_error(write_client.post("/api/index", files=files, data={"label": "1"}), 401)
    bad = {"X-Write-Token": "wrong"}
    assert_json_error(
        write_client.post("/api/index", files=files, data={"label": "1"}, headers=bad), 403
    )
    assert_json_error(write_client.delete("/api/images/1"), 401)
    assert_json_error(write_client.delete("/api/images/1", headers=bad), 403)
    assert write_client.get("/health").json()["count"] == 92


def test_add_then_delete(write_client, tmp_path: Path) -> None:
    ok = {"X-Write-Token": TOKEN}
    files = [
        crop_file(f"{QUERY_CELL} 7a.bmp"),
        ("files", ("junk.png", b"junk", "image/png")),
        crop_file(f"{QUERY_CELL} 7b.bmp"),
    ]
    r = write_client.post(
        "/api/index", files=files, data={"label": ["7", "7", "7"], "cell": "lab-cell-9"}, headers=ok
    )
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["added"] == 2 and report["count"] == 94
    assert report["errors"][0]["file"] == "junk.png"
    assert write_client.get("/api/index").json()["count"] == 94
    q = write_client.post("/api/query?k=1", files=[crop_file(f"{QUERY_CELL} 7a.bmp")]).json()
    top = q["results"][0]["neighbours"][0]
    assert top["score"] > 0.999 and top["label"] == "7" and top["cell_id"] == "lab-cell-9"
    assert Path(top["path"]).parent == tmp_path / "uploads"
    assert write_client.get(f"/api/images/{top['id']}/thumb").status_code == 200
    # bearer tokens work too; the archived file goes with its row
    gone = write_client.delete(
        f"/api/images/{top['id']}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert gone.json() == {"id": top["id"], "removed": 1, "count": 93}
    assert not Path(top["path"]).exists()
    assert_json_error(write_client.get(f"/api/images/{top['id']}"), 404)
    assert_json_error(write_client.delete(f"/api/images/{top['id']}", headers=ok), 404)
    # one label per file (or one for all); labels are classes
    bad = write_client.post("/api/index", files=files, data={"label": ["7", "7"]}, headers=ok)
    assert "labels" in assert_json_error(bad, 400)["error"]
    bad = write_client.post("/api/index", files=files[:1], data={"label": "25"}, headers=ok)
    assert_json_error(bad, 400)


# -- errors, concurrency, CORS -------------------------------------------------------------


def test_errors_are_json(client, app, monkeypatch) -> None:
    assert_json_error(client.get("/nope"), 404)
    assert_json_error(client.put("/api/query"), 405)
    monkeypatch.setattr(app.state.engine, "card", lambda: 1 / 0)
    r = client.get("/api/index")
    assert r.status_code == 500 and r.json() == {
        "error": "internal server error; the server's log has the details"
    }


def test_health_answers_while_the_encoder_is_busy(client, app) -> None:
    lock = app.state.engine.encoder_lock
    done: dict[str, int] = {}
    lock.acquire()  # a heavy request holds the encoder
    try:
        worker = threading.Thread(
            target=lambda: done.setdefault(
                "status",
                client.post("/api/query", files=[crop_file(f"{QUERY_CELL} 3a.bmp")]).status_code,
            )
        )
        worker.start()
        time.sleep(0.3)
        start = time.perf_counter()
        assert client.get("/health").status_code == 200
        assert time.perf_counter() - start < 2.0
        assert "status" not in done  # the query still waits for the encoder
    finally:
        lock.release()
    worker.join(60)
    assert done["status"] == 200


def test_concurrent_queries_each_get_their_own_answer(client, app) -> None:
    from concurrent.futures import ThreadPoolExecutor

    names = [f"{QUERY_CELL} {c}.bmp" for c in ("1a", "5b", "9a", "13b", "18a", "21b", "23a", "2b")]
    alone = {n: client.post("/api/query?k=3", files=[crop_file(n)]).json() for n in names}
    lock = app.state.engine.encoder_lock
    lock.acquire()  # let the requests queue up, so that they are embedded together
    held = True
    try:
        with ThreadPoolExecutor(len(names)) as pool:
            futures = {
                n: pool.submit(client.post, "/api/query?k=3", files=[crop_file(n)]) for n in names
            }
            time.sleep(1.0)
            lock.release()
            held = False
            together = {n: f.result().json() for n, f in futures.items()}
    finally:
        if held:
            lock.release()
    for n in names:
        (a,), (b,) = alone[n]["results"], together[n]["results"]
        assert b["query"] == n and b["predicted"]["label"] == a["predicted"]["label"]
        assert [x["id"] for x in b["neighbours"]] == [x["id"] for x in a["neighbours"]]
        assert abs(b["predicted"]["score"] - a["predicted"]["score"]) < 1e-3


def test_cors_is_off_by_default(client) -> None:
    origin = {"Origin": "https://elsewhere.example"}
    assert "access-control-allow-origin" not in client.get("/api/index", headers=origin).headers
    pre = client.options("/api/query", headers={**origin, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in pre.headers


# -- the command ---------------------------------------------------------------------------


def test_serve_command(index_dir: Path, monkeypatch) -> None:
    import uvicorn
    from typer.testing import CliRunner

    from karyosearch.cli import app

    runner = CliRunner()
    help_text = runner.invoke(app, ["serve", "--help"], terminal_width=200).output
    for words in ("127.0.0.1", "KARYOSEARCH_WRITE_TOKEN", "/api/query", "/docs"):
        assert words in help_text
    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw, app=app))
    monkeypatch.delenv("KARYOSEARCH_WRITE_TOKEN", raising=False)
    r = runner.invoke(app, ["serve", "--index", str(index_dir), "--model", str(MODEL)])
    assert r.exit_code == 0, r.output
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8000
    assert seen["app"].openapi()["paths"].get("/api/index", {}).get("post") is None
    seen["app"].state.engine.batcher.close()  # uvicorn's shutdown would; the mock did not run
    bad = runner.invoke(app, ["serve", "--index", str(index_dir.parent / "none")])
    assert bad.exit_code == 1 and "no index here" in bad.output


def test_the_embedding_thread_ends_with_the_server(index_dir: Path) -> None:
    """A worker still inside the encoder when the interpreter exits aborts it (exit 134)."""
    from fastapi.testclient import TestClient

    from karyosearch.server.app import create_app

    app = create_app(index_dir, MODEL, warm_up=False)
    with TestClient(app) as c:
        assert c.get("/health").status_code == 200
        assert app.state.engine.batcher.thread.is_alive()
    assert not app.state.engine.batcher.thread.is_alive()
