"""The one folder walker: index, query, karyotype and the dataset readers list files alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from karyosearch.data.files import (
    expand_paths,
    file_identity,
    files_under,
    image_files,
    subfolders,
)
from karyosearch.errors import UserError

from ..conftest import chromosome_array, write_image


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for rel in ("1/a.png", "1/deep/b.bmp", "X/c.tif", ".hidden/d.png", "1/.e.png", "top.jpg"):
        write_image(tmp_path / rel, chromosome_array(seed=len(rel)))
    (tmp_path / "1" / "notes.txt").write_text("not an image")
    return tmp_path


def test_files_are_sorted_recursive_and_hidden_ones_left_out(tree: Path) -> None:
    rel = [p.relative_to(tree).as_posix() for p in files_under(tree)]
    assert rel == ["1/a.png", "1/deep/b.bmp", "1/notes.txt", "X/c.tif", "top.jpg"]
    flat = [p.relative_to(tree).as_posix() for p in files_under(tree, recursive=False)]
    assert flat == ["top.jpg"]
    assert [p.name for p in image_files(tree / "1")] == ["a.png", "b.bmp"]
    assert [p.name for p in subfolders(tree)] == ["1", "X"]
    assert files_under(tree / "missing") == [] and subfolders(tree / "missing") == []


def test_expand_paths_walks_a_folder_as_index_does(tree: Path) -> None:
    got = expand_paths([tree / "top.jpg", tree])
    assert got[0] == tree / "top.jpg"
    assert [p.relative_to(tree).as_posix() for p in got[1:]] == [
        "1/a.png",
        "1/deep/b.bmp",
        "X/c.tif",
        "top.jpg",
    ]
    (tree / "empty").mkdir()
    (tree / "empty" / "notes.txt").write_text("no image")
    with pytest.raises(UserError, match="no image files"):
        expand_paths([tree / "empty"])
    # a hidden folder asked for by name is walked: only what is hidden below it is left out
    assert [p.name for p in expand_paths([tree / ".hidden"])] == ["d.png"]
    with pytest.raises(UserError, match="no such file or folder"):
        expand_paths([tree / "nope.png"])


def test_walk_lists_what_it_skipped_with_the_reason(tmp_path: Path) -> None:
    from karyosearch.data.files import walk

    from ..conftest import make_special_entries

    write_image(tmp_path / "cell" / "a.png", chromosome_array())
    made = make_special_entries(tmp_path / "cell" / "sub")
    listing = walk(tmp_path / "cell")
    assert [p.name for p in listing.files] == ["a.png"]
    reasons = {p.name: reason for p, reason in listing.skipped}
    assert set(reasons) == set(made)
    for name, words in made.items():
        assert words in reasons[name], (name, reasons[name])
    flat = walk(tmp_path / "cell" / "sub", recursive=False)
    assert {p.name for p, _ in flat.skipped} == set(made)


def test_walk_visits_a_folder_symlinked_into_itself_once(tmp_path: Path) -> None:
    import os

    from karyosearch.data.files import walk

    write_image(tmp_path / "cell" / "a.png", chromosome_array())
    os.symlink("..", tmp_path / "cell" / "up")
    assert [p.name for p in walk(tmp_path / "cell").files] == ["a.png"]


def test_collect_paths_reports_missing_and_special_paths_and_goes_on(tmp_path: Path) -> None:
    from karyosearch.data.files import collect_paths

    from ..conftest import make_special_entries

    good = write_image(tmp_path / "a.png", chromosome_array())
    made = make_special_entries(tmp_path / "odd")
    given = [good, tmp_path / "missing.png", tmp_path / "odd", tmp_path / "odd" / "pipe.png"]
    listing = collect_paths(given)
    assert listing.files == [good]
    reasons = [(p.name, r) for p, r in listing.skipped]
    assert ("missing.png", "no such file or folder") in reasons
    assert len(reasons) == 1 + len(made) + 1  # the FIFO twice: in the folder, and given


def test_file_identity_is_one_for_a_file_its_symlink_and_hard_link(tmp_path: Path) -> None:
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"x")
    b.write_bytes(b"x")  # same bytes, another file
    (tmp_path / "sym.png").symlink_to(a)
    (tmp_path / "hard.png").hardlink_to(a)
    same = {file_identity(p) for p in (a, tmp_path / "sym.png", tmp_path / "hard.png")}
    assert len(same) == 1 and file_identity(b) not in same
    gone = tmp_path / "gone.png"  # a file moved away since it was indexed
    assert file_identity(gone) == str(gone) and file_identity(gone) not in same
