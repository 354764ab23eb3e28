"""Dataset readers: find every labelled chromosome image under a path.

Four layouts, chosen by `detect_layout` unless the caller names one:

- `bioimlab`: `single_chromosomes/<K>/<K> <class><a|b>.bmp`; K is the karyotype (one cell,
  one patient); X and Y of a male cell have no suffix (`<K> 23.bmp`, `<K> 24.bmp`).
- `gband`: `single_clase/<patient>.<cell>.tiff/clase<k>/clase<k>_<i>_<patient>.<cell>.tiff`
  (the cell folder's name ends in `.tiff` although it is a folder).
- `folders`: `<root>/<class>/<image>`, class folders named 1..22, X, Y, 23 or 24.
- `csv`: a manifest with columns `path,label` and optionally `cell_id,patient_id`; paths are
  relative to the manifest's folder.

Files that cannot be labelled are reported in `Dataset.rejected` with a reason, never fatal;
so are the entries that are no readable regular file (a named pipe, a socket, a device, a
symlink loop, a folder named like an image, an unreadable file): they are never opened.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..errors import UserError
from ..labels import class_index
from ..util.regular import absolute, file_problem
from .files import files_under, subfolders, walk
from .image import is_image_path

Layout = Literal["auto", "bioimlab", "gband", "folders", "csv"]
LAYOUTS: tuple[str, ...] = ("bioimlab", "gband", "folders", "csv")

_BIOIMLAB_NAME = re.compile(r"^(\d+) (\d+)([ab]?)\.bmp$", re.IGNORECASE)
_GBAND_NAME = re.compile(r"^clase(\d+)_(\d+)_(.+)$", re.IGNORECASE)


class DatasetError(UserError):
    """A path that holds no readable dataset (missing, wrong layout, unreadable manifest)."""


@dataclass(frozen=True)
class Item:
    """One labelled chromosome image."""

    path: str  # absolute path of the image file
    label: int  # class index 0..23 (see labels.CLASS_NAMES)
    cell_id: str | None = None  # the metaphase (karyotype) it was cut from, where known
    patient_id: str | None = None  # the patient, where known


@dataclass(frozen=True)
class Rejected:
    """A file the reader found but could not use, and why."""

    path: str
    reason: str


@dataclass
class Dataset:
    """The labelled images under `root`, in a stable (sorted) order."""

    root: Path
    layout: str
    items: list[Item]
    rejected: list[Rejected] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> list[int]:
        return [it.label for it in self.items]

    def groups(self) -> list[str]:
        """Per item, the unit that must not straddle a split: patient, else cell, else file."""
        return [it.patient_id or it.cell_id or it.path for it in self.items]


def read_dataset(path: str | os.PathLike, layout: Layout = "auto") -> Dataset:
    """Read the labelled images under `path` with the given or detected layout."""
    root = Path(path).expanduser()
    if not root.exists():
        raise DatasetError(f"{root}: no such file or folder")
    if layout == "auto":
        layout = detect_layout(root)
    readers = {
        "bioimlab": _read_bioimlab,
        "gband": _read_gband,
        "folders": _read_folders,
        "csv": _read_csv,
    }
    if layout not in readers:
        raise DatasetError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    items, rejected = readers[layout](root.resolve())
    if not items:
        raise DatasetError(f"{root}: no labelled chromosome images found (layout {layout})")
    items.sort(key=lambda it: it.path)
    rejected.sort(key=lambda r: r.path)
    return Dataset(root=root.resolve(), layout=layout, items=items, rejected=rejected)


def detect_layout(root: Path) -> str:
    """Name the layout of `root`, or raise DatasetError saying what was expected."""
    if root.is_file():
        if root.suffix.lower() == ".csv":
            return "csv"
        raise DatasetError(f"{root}: a dataset is a folder or a .csv manifest, not this file")
    if _bioimlab_dir(root) is not None:
        return "bioimlab"
    if _gband_dir(root) is not None:
        return "gband"
    if any(_class_dir_label(d) is not None for d in subfolders(root)):
        return "folders"
    if (root / "manifest.csv").is_file():
        return "csv"
    raise DatasetError(
        f"{root}: no known dataset layout (BioImLab single_chromosomes/, G-band single_clase/, "
        "class folders 1..22/X/Y, or a manifest.csv)"
    )


def _bioimlab_dir(root: Path) -> Path | None:
    for candidate in (root / "single_chromosomes", root):
        subs = subfolders(candidate)
        if subs and all(d.name.isdigit() for d in subs):
            first = next(iter(files_under(subs[0], recursive=False)), None)
            if first is not None and _BIOIMLAB_NAME.match(first.name):
                return candidate
    return None


def _read_bioimlab(root: Path) -> tuple[list[Item], list[Rejected]]:
    base = _bioimlab_dir(root)
    if base is None:
        raise DatasetError(f"{root}: not a BioImLab folder (single_chromosomes/<K>/<K> <c>a.bmp)")
    items, rejected = [], []
    for cell_dir in subfolders(base):
        listing = walk(cell_dir, recursive=False)
        rejected.extend(Rejected(str(p), reason) for p, reason in listing.skipped)
        for f in listing.files:
            m = _BIOIMLAB_NAME.match(f.name)
            if not m:
                rejected.append(Rejected(str(f), "file name is not '<K> <class>[a|b].bmp'"))
                continue
            if m.group(1) != cell_dir.name:
                rejected.append(
                    Rejected(str(f), f"karyotype {m.group(1)} in folder {cell_dir.name}")
                )
                continue
            try:
                label = class_index(m.group(2))
            except ValueError as err:
                rejected.append(Rejected(str(f), str(err)))
                continue
            items.append(Item(str(f), label, cell_dir.name, cell_dir.name))
    return items, rejected


def _gband_dir(root: Path) -> Path | None:
    for candidate in (root / "single_clase", root):
        subs = subfolders(candidate)
        if subs and any(
            _class_folder_number(d.name) is not None for s in subs[:3] for d in subfolders(s)
        ):
            return candidate
    return None


def _class_folder_number(name: str) -> str | None:
    m = re.fullmatch(r"clase(\d+)", name, re.IGNORECASE)
    return m.group(1) if m else None


def _read_gband(root: Path) -> tuple[list[Item], list[Rejected]]:
    base = _gband_dir(root)
    if base is None:
        raise DatasetError(
            f"{root}: not a G-band folder (single_clase/<patient>.<cell>.tiff/clase<k>/)"
        )
    items, rejected = [], []
    for cell_dir in subfolders(base):
        cell_id = cell_dir.name
        patient_id = cell_id.split(".")[0]
        for class_dir in subfolders(cell_dir):
            number = _class_folder_number(class_dir.name)
            listing = walk(class_dir, recursive=False)
            rejected.extend(Rejected(str(p), reason) for p, reason in listing.skipped)
            for f in listing.files:
                if number is None:
                    rejected.append(Rejected(str(f), f"folder {class_dir.name!r} is not clase<k>"))
                    continue
                if not is_image_path(f):
                    rejected.append(Rejected(str(f), "not an image file"))
                    continue
                try:
                    label = class_index(number)
                except ValueError as err:
                    rejected.append(Rejected(str(f), str(err)))
                    continue
                items.append(Item(str(f), label, cell_id, patient_id))
    return items, rejected


def _class_dir_label(folder: Path) -> int | None:
    try:
        return class_index(folder.name)
    except ValueError:
        return None


def _read_folders(root: Path) -> tuple[list[Item], list[Rejected]]:
    items, rejected = [], []
    for class_dir in subfolders(root):
        label = _class_dir_label(class_dir)
        listing = walk(class_dir)
        rejected.extend(Rejected(str(p), reason) for p, reason in listing.skipped)
        for f in listing.files:
            if label is None:
                rejected.append(
                    Rejected(str(f), f"folder {class_dir.name!r} is no class (1..22, X, Y)")
                )
            elif not is_image_path(f):
                rejected.append(Rejected(str(f), "not an image file"))
            else:
                items.append(Item(str(f), label))
    return items, rejected


def _read_csv(root: Path) -> tuple[list[Item], list[Rejected]]:
    manifest = root if root.is_file() else root / "manifest.csv"
    base = manifest.parent
    items, rejected = [], []
    try:
        with manifest.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = {"path", "label"} - set(reader.fieldnames or [])
            if missing:
                raise DatasetError(f"{manifest}: missing column(s) {', '.join(sorted(missing))}")
            for row in reader:
                given = Path(os.path.abspath(base / (row["path"] or "")))
                problem = "no path" if not row["path"] else file_problem(given)
                if problem is not None:  # reported as written: a loop has no resolved path
                    rejected.append(Rejected(str(given), problem))
                    continue
                f = absolute(given)
                try:
                    label = class_index(row["label"])
                except ValueError as err:
                    rejected.append(Rejected(str(f), str(err)))
                    continue
                items.append(
                    Item(str(f), label, row.get("cell_id") or None, row.get("patient_id") or None)
                )
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DatasetError(f"{manifest}: cannot read manifest ({err})") from None
    return items, rejected
