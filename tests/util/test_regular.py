"""Only regular files are read: the reasons for everything else, and no open of a FIFO blocks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from karyosearch.util.regular import NotRegularFileError, absolute, file_problem, open_regular

from ..conftest import make_special_entries, without_hanging


def test_each_special_entry_has_its_reason(tmp_path: Path) -> None:
    made = make_special_entries(tmp_path)
    (tmp_path / "ok.png").write_bytes(b"x")
    assert file_problem(tmp_path / "ok.png") is None
    assert file_problem(tmp_path / "missing.png") == "no such file"
    assert file_problem("/dev/null") == "a device, not a file"
    for name, words in made.items():
        if name == "folder.png":
            words = "folder"
        assert words in (file_problem(tmp_path / name) or ""), name


def test_open_regular_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(NotRegularFileError, match="named pipe"):
        without_hanging(lambda: open_regular(fifo), [fifo])
    for target, words in ((tmp_path, "folder"), ("/dev/null", "device")):
        with pytest.raises(NotRegularFileError, match=words):
            open_regular(target)
    with pytest.raises(FileNotFoundError):
        open_regular(tmp_path / "missing.png")
    (tmp_path / "ok.bin").write_bytes(b"abc")
    with open_regular(tmp_path / "ok.bin") as fh:
        assert fh.read() == b"abc"


def test_absolute_survives_a_symlink_loop(tmp_path: Path) -> None:
    os.symlink("loop", tmp_path / "loop")
    # Path.resolve raises RuntimeError here on Python 3.11
    assert absolute(tmp_path / "loop") == Path(os.path.abspath(tmp_path / "loop"))
