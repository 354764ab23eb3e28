"""Atomic writes: a temporary sibling renamed over the target, so a failure mid-write leaves
the previous file (or none), never a half-written one."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from karyosearch.util.atomic import atomic_path, write_json


def test_success_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.txt"  # the folder is made
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_text("new")
        assert not target.exists()  # nothing at the target until the write succeeded
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_an_exception_mid_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_write_json_is_atomic_and_refuses_nan(tmp_path: Path) -> None:
    target = tmp_path / "r.json"
    assert write_json(target, {"a": 1, "b": [0.5]}) == target
    assert json.loads(target.read_text()) == {"a": 1, "b": [0.5]}
    with pytest.raises(ValueError):
        write_json(target, {"a": math.nan})
    assert json.loads(target.read_text()) == {"a": 1, "b": [0.5]}  # the old file stays
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
