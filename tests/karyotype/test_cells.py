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
