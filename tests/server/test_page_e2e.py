"""The page in a real headless Chromium (Debian's `chromium`, driven by Playwright; nothing is
downloaded): a crop gets its class and neighbour thumbnails, a cell its karyotype and
karyogram, and correcting one crop recounts the karyotype and exports the correction."""

from __future__ import annotations

import json
import shutil

import pytest

from karyosearch.server.background import wait_until

from .conftest import QUERY_CELL, cell_files

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; .ci/run does)"
)


@pytest.fixture(scope="module")
def base_url(app):
    from karyosearch.server.background import serve_in_thread

    with serve_in_thread(app) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


def test_crop_then_cell_then_correction(base_url: str, browser, tmp_path) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    failures: list[str] = []
    page.on("pageerror", lambda err: failures.append(str(err)))
    page.goto(base_url + "/")
    wait_until(page, "document.getElementById('index-info').textContent.includes('92')")

    # one crop: its class, and its nearest archived chromosomes as thumbnails
    crop = next(p for p in cell_files(QUERY_CELL) if p.name == f"{QUERY_CELL} 21b.bmp")
    page.set_input_files("#input-crops", str(crop))
    page.wait_for_selector("#crop-grid .crop .cls")
    assert page.inner_text("#crop-grid .crop .cls") == "21"
    wait_until(
        page,
        "[...document.querySelectorAll('#crops-neighbours .nn img')]"
        ".filter(i => i.complete && i.naturalWidth > 0).length === 9",
    )
    labels = page.locator("#crops-neighbours .nn .lab").all_inner_texts()
    assert len(labels) == 9 and labels[0] == "21"

    # a cell: the karyotype, the counts and the karyogram
    page.set_input_files("#input-cell-files", [str(p) for p in cell_files(QUERY_CELL)])
    page.wait_for_selector("#cell-view:not([hidden])", timeout=60_000)
    assert page.inner_text("#karyotype") == "46,XX"
    assert page.locator("#cell-grid .crop").count() == 46
    wait_until(
        page,
        "(() => { const i = document.getElementById('karyogram');"
        " return i.complete && i.naturalWidth > 1000; })()",
    )
    assert page.inner_text("#counts [data-class='21'] .n") == "2"
    wait_until(
        page,
        "(() => { const s = [...document.querySelectorAll('#cell-neighbours .nn img')];"
        " return s.length === 9 && s.every(i => i.complete && i.naturalWidth > 0); })()",
    )

    # correct one crop: a 22 called 21 makes a third 21; the karyotype is recounted
    card = (
        page.locator("#cell-grid .crop", has=page.locator("select"))
        .filter(has=page.locator("option:checked", has_text="22"))
        .first
    )
    card.locator("select").select_option("21")
    wait_until(page, "document.getElementById('karyotype').textContent === '47,XX,+21'")
    assert "corrected (1)" in page.inner_text("#karyotype-note")
    assert page.inner_text("#counts [data-class='21'] .n") == "3"
    assert "odd" in (page.get_attribute("#counts [data-class='21']", "class") or "")

    # the karyogram redrawn with the correction
    page.click("#redraw")
    wait_until(
        page,
        "(() => { const i = document.getElementById('karyogram');"
        " return i.src.startsWith('blob:') && i.complete && i.naturalWidth > 1000; })()",
    )
    assert "correction" in page.inner_text("#karyogram-caption")
    assert page.is_hidden("#redraw")

    # the corrected calls, exported for the lab's records
    with page.expect_download() as download:
        page.click("#export-json")
    exported = json.loads(open(download.value.path(), encoding="utf-8").read())
    assert exported["karyotype"] == "47,XX,+21" and exported["karyotype_by_model"] == "46,XX"
    assert exported["corrections"] == 1 and len(exported["crops"]) == 46
    with page.expect_download() as download:
        page.click("#export-csv")
    rows = open(download.value.path(), encoding="utf-8").read().splitlines()
    assert rows[0].startswith("cell,karyotype,file,model_label") and len(rows) == 47
    assert sum(",true," in r for r in rows) == 1

    # undo: back to the model's reading
    page.click("#reset")
    wait_until(page, "document.getElementById('karyotype').textContent === '46,XX'")
    assert failures == []
    page.close()
