"""Cells from files: one cell folder, or a folder of cell folders, through the encoder to
their karyotypes; and the `karyotype` command's whole run (`run_karyotype`).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.files import file_identity, image_files, subfolders, walk
from ..data.image import is_image_path
from ..errors import UserError
from ..labels import CLASS_NAMES
from ..model.predict import neighbour_votes
from ..sizes import relative_sizes
from .params import KaryotypeParams, check_fingerprint, load_params, params_file_for
from .report import CellKaryotype, karyotype_scores

if TYPE_CHECKING:
    from ..model.encoder import Encoder

MAX_CELL_IMAGES = 60  # more images than this in one folder cannot be one metaphase
# Fewer readable crops than this are no cell (a metaphase has 46; a cell missing a crop or
# two still reads, a handful of crops gives a meaningless "45,X"): refused, not karyotyped.
MIN_CELL_CROPS = 20


def _not_a_cell(n: int) -> str:
    return (
        f"not a cell: {n} readable crop{'s' if n != 1 else ''} (a metaphase has 46; at least "
        f"{MIN_CELL_CROPS} are needed to read a karyotype)"
    )


@dataclass
class CellFiles:
    """The files of one cell folder: chromosome images, and other files (reported, not used)."""

    folder: Path
    images: list[Path]
    others: list[Path]
    # entries that are no readable regular file (FIFO, socket, device, symlink loop, folder
    # named like an image, unreadable), with the reason: never opened, reported
    unreadable: list[tuple[Path, str]] = field(default_factory=list)


def collect_cell(folder: str | os.PathLike, max_images: int = MAX_CELL_IMAGES) -> CellFiles:
    """The images under `folder` (`data.files.files_under`: recursively, hidden files left out),
    checked to be one cell.

    UserError when the folder is missing, holds no image, or more than `max_images` images.
    """
    folder = Path(folder)
    if not folder.exists():
        raise UserError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise UserError(f"{folder}: a cell is a folder of chromosome crops, not a file")
    listing = walk(folder)
    files = listing.files
    images = [p for p in files if is_image_path(p)]
    others = [p for p in files if not is_image_path(p)]
    if not files and not listing.skipped:
        raise UserError(f"{folder}: the folder is empty; expected one cell's chromosome crops")
    if not images and listing.skipped:
        path, reason = listing.skipped[0]
        raise UserError(
            f"{folder}: no readable chromosome image ({len(listing.skipped)} skipped, e.g. "
            f"{path.name}: {reason})"
        )
    if not images:
        raise UserError(
            f"{folder}: no chromosome images among its {len(others)} files "
            f"(e.g. {others[0].name}); expected .png, .bmp, .tif or .jpg crops"
        )
    if len(images) > max_images:
        raise UserError(
            f"{folder}: {len(images)} images are too many for one cell (at most "
            f"{max_images}); for a folder of cell folders use --batch"
        )
    return CellFiles(folder, images, others, listing.skipped)


def _skipped(files: CellFiles | None, errors: Sequence[Any] = ()) -> list[dict[str, str]]:
    out = []
    if files is not None:
        out += [{"path": str(p), "reason": reason} for p, reason in files.unreadable]
        out += [{"path": str(p), "reason": "not an image file"} for p in files.others]
    return out + [{"path": e.path, "reason": e.reason} for e in errors]


def karyotype_cell(
    encoder: Encoder,
    paths: Sequence[str | os.PathLike],
    params: KaryotypeParams,
    fast: bool = True,
    cell: str | None = None,
    archive: Any = None,
) -> CellKaryotype:
    """The karyotype of one cell from its crop image files.

    Unreadable images are skipped and reported in `skipped`; UserError when none is left or
    there are more than MAX_CELL_IMAGES. Params with no temperature use the encoder's. With an
    `archive` (an opened `SearchIndex` of labelled crops, same encoder), each crop's class
    probabilities weigh in the archive (its class means and the vote of its nearest archived
    crops, under the index's setting), as `query` does.
    """
    from ..model.embed import embed_files

    if not paths:
        raise UserError("a cell needs at least one chromosome crop")
    if len(paths) > MAX_CELL_IMAGES:
        raise UserError(
            f"{len(paths)} images are too many for one cell (at most {MAX_CELL_IMAGES})"
        )
    emb = embed_files(encoder, list(paths), fast=fast)
    if not emb.paths:
        raise UserError(f"none of the {len(paths)} images could be read ({emb.errors[0]})")
    if len(emb.paths) < MIN_CELL_CROPS:
        raise UserError(f"{cell or 'cell'}: {_not_a_cell(len(emb.paths))}")
    evidence = archive.archive_evidence(emb.embeddings, emb.paths) if archive is not None else None
    result = karyotype_scores(
        emb.scores,
        emb.paths,
        params.with_temperature(encoder.score_temperature),
        cell=cell,
        embeddings=emb.embeddings,
        sizes=relative_sizes(emb.areas),
        archive=evidence,
    )
    result.skipped = _skipped(None, emb.errors)
    result.embeddings = emb.embeddings
    return result


def karyotype_folder(
    encoder: Encoder,
    folder: str | os.PathLike,
    params: KaryotypeParams,
    fast: bool = True,
    files: CellFiles | None = None,
    archive: Any = None,
) -> CellKaryotype:
    """`karyotype_cell` on the images of one cell folder (`files`, if already collected, else
    `collect_cell(folder)`); other files are reported, not fatal."""
    files = collect_cell(folder) if files is None else files
    result = karyotype_cell(encoder, files.images, params, fast, str(Path(folder)), archive)
    result.skipped = _skipped(files) + result.skipped
    return result


def attach_neighbours(
    result: CellKaryotype, search: Any, k: int = 4, all_crops: bool = False
) -> None:
    """Give the review crops (or all) their k most similar archived crops, to compare bands.

    `search` is an opened `engine.SearchIndex` built with the same encoder; a crop's own file,
    if archived, is not its own neighbour.
    """
    if result.embeddings is None:
        raise ValueError("the result holds no embeddings (karyotype_cell keeps them)")
    rows = [i for i, c in enumerate(result.crops) if all_crops or c.reasons]
    if not rows:
        return
    found = search.query_vectors(
        result.embeddings[rows], k + 1, queries=[result.crops[i].path for i in rows]
    )
    for i, r in zip(rows, found, strict=True):
        crop = result.crops[i]
        own = file_identity(crop.path)
        near = [n for n in r.neighbours if file_identity(n.path) != own][:k]
        crop.neighbours = [
            {
                "rank": j + 1,
                "score": round(float(n.score), 4),
                "label": n.label,
                "path": n.path,
                "cell_id": n.cell_id,
            }
            for j, n in enumerate(near)
        ]
        # the vote `query` takes (majority; a tie to the more similar class)
        voted = [(CLASS_NAMES.index(n.label), n.score) for n in near if n.label is not None]
        crop.knn_label = None
        if voted:
            labels, sims = (np.asarray([v]) for v in zip(*voted, strict=True))
            votes = neighbour_votes(labels, sims, len(CLASS_NAMES))[0]
            crop.knn_label = CLASS_NAMES[int(votes.argmax())]


def find_cell_folders(root: str | os.PathLike, max_images: int = MAX_CELL_IMAGES) -> list[Path]:
    """The cell folders under `root`: subfolders holding 1..max_images images (recursively).

    A subfolder with more images is taken as a folder of cells and searched in turn, so
    `gband612/` and `gband612/single_clase/` both give the 612 cell folders.
    """
    cells: list[Path] = []

    def visit(folder: Path) -> None:
        for sub in subfolders(folder):
            n = len(image_files(sub))
            if 0 < n <= max_images:
                cells.append(sub)
            elif n > max_images:
                visit(sub)

    visit(Path(root))
    return cells


def collect_cells(root: str | os.PathLike) -> list[CellFiles]:
    """The files of every cell folder under `root` (`find_cell_folders`), each collected once.

    UserError when `root` is no folder or holds no cell folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder")
    folders = find_cell_folders(root)
    if not folders:
        raise UserError(f"{root}: no cell folders with chromosome images found")
    return [collect_cell(f) for f in folders]


@dataclass
class BatchKaryotype:
    """Karyotypes of the cells of a folder of cell folders."""

    root: str
    cells: list[CellKaryotype]
    errors: list[dict[str, str]]  # {"cell", "reason"} for cells that gave no karyotype

    def to_json(self) -> dict[str, Any]:
        calls = Counter(c.karyotype for c in self.cells)
        return {
            "root": self.root,
            "n_cells": len(self.cells),
            "karyotypes": dict(calls.most_common()),
            "cells": [c.to_json() for c in self.cells],
            "errors": self.errors,
        }


def karyotype_cells(
    encoder: Encoder,
    cells: Sequence[CellFiles],
    params: KaryotypeParams,
    fast: bool = True,
    batch_size: int = 128,
    progress: Callable[[int], None] | None = None,
    root: str | os.PathLike = "",
    archive: Any = None,
) -> BatchKaryotype:
    """Karyotype collected cell folders (`collect_cells`), embedding all their crops in shared
    batches (with an `archive`, as `karyotype_cell`). A cell that fails is reported in
    `errors`."""
    from ..model.embed import embed_files

    paths = [p for f in cells for p in f.images]
    emb = embed_files(encoder, paths, batch_size=batch_size, fast=fast, progress=progress)
    row = {p: i for i, p in enumerate(emb.paths)}
    err_by_path = {e.path: e for e in emb.errors}
    params = params.with_temperature(encoder.score_temperature)
    evidence = archive.archive_evidence(emb.embeddings, emb.paths) if archive is not None else None
    results, errors = [], []
    for f in cells:
        rows = [row[str(p)] for p in f.images if str(p) in row]
        if not rows:
            errors.append({"cell": str(f.folder), "reason": "none of its images could be read"})
            continue
        if len(rows) < MIN_CELL_CROPS:
            errors.append({"cell": str(f.folder), "reason": _not_a_cell(len(rows))})
            continue
        result = karyotype_scores(
            emb.scores[rows],
            [emb.paths[i] for i in rows],
            params,
            cell=str(f.folder),
            embeddings=emb.embeddings[rows],
            sizes=relative_sizes(emb.areas[rows]),
            archive=evidence.take(rows) if evidence is not None else None,
        )
        result.embeddings = emb.embeddings[rows]
        result.skipped = _skipped(
            f, [err_by_path[str(p)] for p in f.images if str(p) in err_by_path]
        )
        results.append(result)
    return BatchKaryotype(str(root), results, errors)


def karyotype_folder_of_cells(
    encoder: Encoder,
    root: str | os.PathLike,
    params: KaryotypeParams,
    fast: bool = True,
    batch_size: int = 128,
    progress: Callable[[int], None] | None = None,
) -> BatchKaryotype:
    """Karyotype every cell folder under `root` (`collect_cells`, then `karyotype_cells`)."""
    return karyotype_cells(
        encoder, collect_cells(root), params, fast, batch_size, progress, root=Path(root)
    )


@dataclass
class KaryotypeRun:
    """What `run_karyotype` found: one cell, or the cells of a folder of cells."""

    cells: list[CellKaryotype]  # one per cell karyotyped
    batch: BatchKaryotype | None  # the folder of cells (None for a single cell)
    pngs: list[Path] = field(default_factory=list)  # karyograms written
    model_note: str | None = None  # how the encoder was chosen when none was given

    def to_json(self) -> dict[str, Any]:
        """The `karyotype` command's JSON: one cell's, or the batch's with every cell."""
        out = self.batch.to_json() if self.batch is not None else self.cells[0].to_json()
        if self.pngs:
            out["png"] = (
                [str(p) for p in self.pngs] if self.batch is not None else str(self.pngs[0])
            )
        return out


def run_karyotype(
    cell_dir: str | os.PathLike,
    model: str | os.PathLike | None,
    params_file: str | os.PathLike | None = None,
    batch: bool = False,
    index: str | os.PathLike | None = None,
    k: int = 4,
    png: str | os.PathLike | None = None,
    device: str = "auto",
    progress: Callable[[str, int | None], Callable[[int], None]] | None = None,
) -> KaryotypeRun:
    """The `karyotype` command: karyotype one cell folder (`karyotype_folder`) or, with
    `batch`, every cell folder under `cell_dir` (`karyotype_cells`), with the parameters of
    `params_file` or those beside the model (`params.params_file_for`, refused when fitted for
    another encoder); with `index`, the `k` most similar archived crops of each crop to review
    (`attach_neighbours`); with `png`, a karyogram (with `batch`: a folder of them).

    With `index`, each crop's call also weighs its nearest archived crops' labels (the lab's
    own archive; `karyotype_cell`). With no `model`, the shipped encoder for the crops' stain
    (`model.shipped`); `model_note` says which. `progress(description, total)` may return an
    `advance(n)` callback (batch mode).
    """
    from ..model.checkpoint import load_encoder
    from ..util.runtime import pick_device

    cell_dir = Path(cell_dir)
    if not cell_dir.is_dir():
        raise UserError(
            f"{cell_dir}: no such folder"
            if not cell_dir.exists()
            else f"{cell_dir}: CELL_DIR must be a folder of chromosome crops"
        )
    cells = collect_cells(cell_dir) if batch else [collect_cell(cell_dir)]
    note = None
    if model is None:
        from ..model.shipped import choose_shipped

        choice = choose_shipped([p for f in cells for p in f.images])
        model, note = choice.path, choice.note
    chosen = params_file_for(model, params_file)
    params = load_params(chosen) if chosen is not None else KaryotypeParams()
    encoder = load_encoder(model, pick_device(device))
    if chosen is not None:
        check_fingerprint(params, encoder.fingerprint, chosen, model)
    search = None
    if index is not None:
        from ..search.engine import SearchIndex

        search = SearchIndex.open(index, encoder)
    found = None
    if batch:
        total = sum(len(f.images) for f in cells)
        advance = progress("embedding crops", total) if progress is not None else None
        found = karyotype_cells(
            encoder, cells, params, progress=advance, root=cell_dir, archive=search
        )
        results = found.cells
    else:
        results = [karyotype_folder(encoder, cell_dir, params, files=cells[0], archive=search)]
    if search is not None:
        for r in results:
            attach_neighbours(r, search, k)
    pngs: list[Path] = []
    if png is not None:
        from .karyogram import render_karyogram

        if batch:
            pngs = [
                render_karyogram(r, Path(png) / f"{Path(r.cell or 'cell').name}.karyogram.png")
                for r in results
            ]
        else:
            pngs = [render_karyogram(results[0], png)]
    return KaryotypeRun(results, found, pngs, note)
