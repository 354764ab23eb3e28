"""The one folder walker: which files under a folder count, for every command that takes one.

Indexing, querying, karyotyping and the dataset readers all list files with these functions,
so a folder means the same everywhere: its files, sorted by path, searched recursively unless
asked otherwise, hidden files and hidden folders (a name starting with ".") left out.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..util.regular import FOLDER, file_problem, os_problem
from .image import is_image_path


@dataclass
class Listing:
    """What a folder holds: the regular files that count, and the entries that were skipped
    with the reason (a named pipe, a socket, a device, a symlink loop or broken symlink, an
    unreadable file or folder, a folder named like an image)."""

    files: list[Path]  # regular readable files, sorted by path
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (path, reason), sorted


def walk(folder: str | os.PathLike, recursive: bool = True) -> Listing:
    """The regular files under `folder` (in its subfolders too when `recursive`; symlinks
    followed, each folder visited once), hidden ones left out, and what was skipped and why.

    Nothing is opened: every entry is looked at with `stat` only (`util.regular`). A folder
    whose name ends like an image file (`x.png/`) is reported when it gives no file; a folder
    that cannot be listed (other than `folder` itself) is reported too.
    """
    root = Path(folder)
    listing = Listing([])
    seen: set[tuple[int, int]] = set()

    def visit(directory: Path) -> None:
        try:
            st = os.stat(directory)
            if (st.st_dev, st.st_ino) in seen:
                return  # a symlink back to a folder already walked
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as err:
            if directory != root:
                listing.skipped.append((directory, f"folder {os_problem(err, directory)}"))
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            reason = file_problem(path)
            if reason is None:
                listing.files.append(path)
            elif reason == FOLDER:
                before = len(listing.files)
                if recursive:
                    visit(path)
                if is_image_path(path) and len(listing.files) == before:
                    listing.skipped.append((path, "a folder named like an image, not an image"))
            else:
                listing.skipped.append((path, reason))

    visit(root)
    listing.files.sort()
    listing.skipped.sort()
    return listing


def files_under(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """The regular files under `folder` (in its subfolders too when `recursive`), sorted,
    hidden ones left out; [] for a folder that cannot be listed (`walk` also says what was
    skipped)."""
    return walk(folder, recursive).files


def image_files(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """The image files (`image.is_image_path`) among `files_under(folder, recursive)`."""
    return [p for p in files_under(folder, recursive) if is_image_path(p)]


def subfolders(folder: str | os.PathLike) -> list[Path]:
    """The folders directly in `folder`, sorted, hidden ones left out; [] when unlistable."""
    root = Path(folder)
    try:
        return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def collect_paths(paths: Sequence[str | os.PathLike]) -> Listing:
    """Files as given, and a folder for its image files (`image_files`: recursively, as
    `index` reads a `<class>/<image>` tree); never raises: a given path that is missing or
    no readable regular file, an entry of a folder that `walk` skipped, and a folder with no
    image are in `skipped` with the reason."""
    out = Listing([])
    for given in paths:
        p = Path(given)
        problem = file_problem(p)
        if problem == FOLDER:
            listing = walk(p)
            found = [f for f in listing.files if is_image_path(f)]
            out.files.extend(found)
            out.skipped.extend(listing.skipped)
            if not found and not listing.skipped:
                out.skipped.append((p, "no image files in this folder"))
        elif problem is None:
            out.files.append(p)
        else:
            out.skipped.append(
                (p, "no such file or folder" if problem == "no such file" else problem)
            )
    return out


def expand_paths(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """`collect_paths`, strict: UserError for the first path it skipped (a path that does not
    exist, a folder with no image, an entry that is no readable regular file)."""
    listing = collect_paths(paths)
    if listing.skipped:
        path, reason = listing.skipped[0]
        raise UserError(f"{path}: {reason}")
    return listing.files


def file_identity(path: str | os.PathLike) -> tuple[int, int] | str:
    """What makes two paths one file: its device and inode where it can be stat'ed (the file,
    a symlink to it and a hard link agree), else its absolute path. One `stat` call: a query
    compares its file with each of its neighbours' (`realpath` took 7 calls a path)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return os.path.abspath(path)
    return (st.st_dev, st.st_ino)
