"""Screenshots of the `karyosearch serve` page in each state, for the README.

Serves an index on loopback, drives the page in Debian's headless chromium (Playwright; no
browser is downloaded) and saves benchmarks/results/figures/serve_*.png:

- serve_start.png: the page as it opens;
- serve_crops.png: three crops named, the first one's nearest archived chromosomes;
- serve_cell.png: a cell's karyotype, counts, karyogram and chromosomes (crops to review
  marked);
- serve_corrected.png: the same cell after one chromosome's class was corrected (the
  karyotype recounted, the karyogram redrawn).

    python benchmarks/serve_screenshots.py --index indexes/demo \\
        --model models/bioimlab-proxy-resnext-cbam-128px.pt
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "bioimlab" / "single_chromosomes"
OUT = REPO / "benchmarks" / "results" / "figures"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, default=REPO / "indexes" / "demo")
    parser.add_argument("--model", type=Path, default=None, help="default: the index's own")
    parser.add_argument(
        "--cell",
        type=Path,
        default=DATA / "77",
        help="a folder of one cell (BioImLab 77: the bundled encoder reads a 5 as an 8 there)",
    )
    parser.add_argument(
        "--fix",
        default="77 5a.bmp=5",
        help="FILE=CLASS: the correction made in the last screenshot",
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from karyosearch.server.app import create_app
    from karyosearch.server.background import serve_in_thread, wait_until

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium is not installed (apt-get install chromium)")
    crops = sorted(p for p in args.cell.iterdir() if p.suffix.lower() == ".bmp")
    if not crops:
        raise SystemExit(f"{args.cell}: no .bmp crops")
    picks = [p for p in crops if p.stem.split()[-1] in ("5a", "7a", "21b")] or crops[:3]
    fix_name, fix_label = args.fix.rsplit("=", 1)
    args.out.mkdir(parents=True, exist_ok=True)
    app = create_app(args.index, args.model)
    saved = []
    with serve_in_thread(app) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900}, device_scale_factor=1)

        def shot(name: str) -> None:
            page.wait_for_timeout(300)
            path = args.out / f"serve_{name}.png"
            page.screenshot(path=str(path), full_page=True)
            saved.append(path)

        page.goto(url + "/")
        wait_until(page, "document.getElementById('index-info').textContent.includes('·')")
        shot("start")

        page.set_input_files("#input-crops", [str(c) for c in picks])
        wait_until(
            page,
            "(() => { const s = [...document.querySelectorAll('#crops-neighbours .nn img')];"
            " return s.length > 0 && s.every(i => i.complete && i.naturalWidth > 0); })()",
        )
        shot("crops")

        page.set_input_files("#input-cell-folder", str(args.cell))  # the folder, as a user picks it
        page.wait_for_selector("#cell-view:not([hidden])", timeout=120_000)
        wait_until(
            page,
            "(() => { const s = [...document.querySelectorAll('#cell-neighbours .nn img')];"
            " return s.length > 0 && s.every(i => i.complete && i.naturalWidth > 0); })()",
        )
        shot("cell")

        card = page.locator(f"#cell-grid .crop[data-name='{fix_name}']")
        card.locator("select").select_option(fix_label)
        wait_until(
            page, "document.getElementById('karyotype-note').textContent.includes('corrected')"
        )
        card.click()
        page.click("#redraw")
        wait_until(page, "document.getElementById('karyogram').src.startsWith('blob:')")
        wait_until(page, "document.getElementById('karyogram').complete")
        shot("corrected")
        browser.close()
    for path in saved:
        print(path)


if __name__ == "__main__":
    main()
