"""The one folder walker: which files under a folder count, for every command that takes one.

Indexing, querying, karyotyping and the dataset readers all list files with these functions,
so a folder means the same everywhere: its files, sorted by path, searched recursively unless
asked otherwise, hidden files and hidden folders (a name starting with ".") left out.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import UserError
from .image import is_image_path


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def files_under(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """The files under `folder` (in its subfolders too when `recursive`), sorted, hidden ones
    left out; [] for a folder that cannot be listed."""
    root = Path(folder)
    try:
        found = root.rglob("*") if recursive else root.iterdir()
        return sorted(p for p in found if not _hidden(p, root) and p.is_file())
    except OSError:
        return []


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


def expand_paths(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given; a folder stands for its image files (`image_files`: recursively, as
    `index` reads a `<class>/<image>` tree). UserError for a path that does not exist or a
    folder with no image."""
    out: list[Path] = []
    for given in paths:
        p = Path(given)
        if p.is_dir():
            found = image_files(p)
            if not found:
                raise UserError(f"{p}: no image files in this folder")
            out.extend(found)
        elif not p.exists():
            raise UserError(f"{p}: no such file or folder")
        else:
            out.append(p)
    return out
