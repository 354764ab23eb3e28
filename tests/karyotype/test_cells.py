"""Cell folders: what counts as one cell, and finding the cells of a folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from karyosearch.cytogenetics import (
    X,
    Y,
)
from karyosearch.errors import UserError
from karyosearch.karyotype.cells import collect_cell, find_cell_folders
from karyosearch.labels import CLASS_NAMES

from ..conftest import chromosome_array, write_image


def test_cell_folder_checks(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="empty"):
        collect_cell(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match="no chromosome images"):
        collect_cell(tmp_path)
    write_image(tmp_path / "clase1" / "a.png", chromosome_array())
    files = collect_cell(tmp_path)
    assert [p.name for p in files.images] == ["a.png"] and [p.name for p in files.others] == [
        "notes.txt"
    ]
    root = tmp_path / "cells"
    for cell in ("c1", "c2"):
        write_image(root / cell / "clase1" / "a.png", chromosome_array())
    assert [p.name for p in find_cell_folders(root)] == ["c1", "c2"]
    assert X == CLASS_NAMES.index("X") and Y == CLASS_NAMES.index("Y")


def test_review_crops_neighbour_vote_breaks_ties_as_query_does(tmp_path: Path) -> None:
    """Two archived 7s and two 8s around a review crop: the more similar class wins (as
    `knn_vote` decides for `query`), not the one listed first; its own file never counts."""
    from types import SimpleNamespace

    import numpy as np

    from karyosearch.karyotype.cells import attach_neighbours
    from karyosearch.karyotype.report import CellKaryotype, CropCall

    crop = CropCall(str(tmp_path / "a.png"), "7", "7", 0.4, 0.01, False, False, ["low margin"])
    result = CellKaryotype("46,XX", "normal", {}, [crop], [crop.path], [], [], [], 1.0)
    result.embeddings = np.ones((1, 4), np.float32)

    def neighbour(label: str, score: float, name: str) -> SimpleNamespace:
        return SimpleNamespace(label=label, score=score, path=str(tmp_path / name), cell_id=None)

    listed = [
        neighbour("9", 1.0, "a.png"),  # the crop itself, archived: left out
        neighbour("7", 0.80, "b.png"),
        neighbour("8", 0.79, "c.png"),
        neighbour("7", 0.70, "d.png"),
        neighbour("8", 0.78, "e.png"),
    ]
    search = SimpleNamespace(query_vectors=lambda *a, **k: [SimpleNamespace(neighbours=listed)])
    attach_neighbours(result, search, k=4)
    assert [n["label"] for n in crop.neighbours] == ["7", "8", "7", "8"]
    assert crop.knn_label == "8"  # 0.79 + 0.78 beats 0.80 + 0.70
