"""The karyogram PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from karyosearch.karyotype.params import (
    KaryotypeParams,
)
from karyosearch.karyotype.report import karyotype_scores

from ..conftest import chromosome_array
from .helpers import (
    counts_with,
    labels_of,
    paths_of,
    scores_of,
)


def test_karyogram_png_with_extra_and_missing_crops(tmp_path: Path) -> None:
    from karyosearch.karyotype.karyogram import render_karyogram

    labels = labels_of(counts_with("XY", c7=-1))
    junk = scores_of(np.array([0]), seed=8)  # a third "1": cheaper as debris than as a 7
    s = np.vstack([scores_of(labels, seed=7), junk])
    r = karyotype_scores(s, paths_of(len(s)), KaryotypeParams(temperature=1.0, extra_cost=2.0))
    assert r.missing == ["7"] and r.to_json()["extra"] == [f"crop{len(s) - 1:02d}.png"]
    images = {c.path: chromosome_array(30 + i % 20, 12, seed=i) for i, c in enumerate(r.crops)}
    out = render_karyogram(r, tmp_path / "k" / "cell.png", images=images)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(out) as im:
        assert im.size[0] > 1000
