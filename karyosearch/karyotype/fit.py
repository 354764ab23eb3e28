"""The whole karyotype fit: from a labelled dataset and an encoder to the parameters that
`karyosearch karyotype` applies (`karyosearch karyotype fit`; `benchmarks/bench_karyotype.py`
fits the same way, then tests on the held-out cells).

Protocol (nothing is fitted on test cells):

- Split: the `karyo` split (every patient with an abnormal cell on the test side; grouped by
  patient) or, for BioImLab (all normal), the `cell` split, with the encoder's training seed.
- Temperature: fitted on the validation crops (NLL). With size (the default), the per-class
  size model is fitted on the training cells and the temperature and size weight together
  on the validation crops (`calibrate.fit_size_weight`).
- Penalties: fitted on training cells with simulated abnormalities (`simulate_cells`,
  `fit_penalty`), the false-positive rate at most `max_fpr` on the simulated normal cells and
  on the normal validation cells (`fpr_cells="val"`); the debris cost and the homologue weight
  are chosen on the validation cells and abnormalities simulated from them.

The parameters record the encoder's fingerprint, so that they are refused beside another one.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..cytogenetics import is_normal, true_karyotype
from ..data.datasets import Dataset, Layout, read_dataset
from ..data.splits import Split, split_dataset
from ..errors import UserError
from ..evaluation.provenance import check_unseen
from ..model.embed import EmbeddedFiles
from ..sizes import fit_size_model, relative_sizes
from ..util.runtime import timestamp
from .calibrate import fit_size_weight, fit_temperature
from .params import KaryotypeParams, params_path, save_params
from .penalty import HOMOLOGUE_WEIGHT_GRID, fit_penalty
from .simulate import LabelledCell, simulate_cells

KARYO_SPLITS: tuple[str, ...] = ("auto", "karyo", "cell")
PENALTY_CELLS: tuple[str, ...] = ("train", "val", "train+val")
FPR_CELLS: tuple[str, ...] = ("val", "none")


@dataclass
class CellRows:
    """One cell: its dataset rows, split side and true karyotype."""

    cell_id: str
    rows: list[int]
    side: str
    karyotype: str | None


def cells_by_side(dataset: Dataset, split: Split, limit: int, seed: int) -> list[CellRows]:
    """Every cell of `dataset` with its side of `split` (a cell never straddles two) and true
    karyotype; `limit` > 0 keeps at most that many per side, every abnormal test cell kept."""
    side_of = np.empty(len(dataset), dtype=object)
    for name in ("train", "val", "test"):
        side_of[split.part(name)] = name
    rows: dict[str, list[int]] = defaultdict(list)
    for i, it in enumerate(dataset.items):
        rows[it.cell_id or it.path].append(i)
    labels = np.asarray(dataset.labels)
    cells = [CellRows(c, r, str(side_of[r[0]]), true_karyotype(labels[r])) for c, r in rows.items()]
    for c in cells:
        if len({side_of[i] for i in c.rows}) != 1:
            raise UserError(f"cell {c.cell_id} straddles split sides; the split is not grouped")
    if limit > 0:
        rng = np.random.default_rng(seed)
        kept = []
        for side in ("train", "val", "test"):
            on = [c for c in cells if c.side == side]
            # keep every abnormal test cell, fill the rest at random
            first = (
                [c for c in on if c.karyotype and not is_normal(c.karyotype)]
                if side == "test"
                else []
            )
            rest = [c for c in on if c not in first]
            pick = rng.permutation(len(rest))[: max(limit - len(first), 0)]
            kept += first + [rest[i] for i in sorted(pick)]
        cells = kept
    return cells


def leak_warnings(
    record: dict[str, Any], dataset: Dataset, split_name: str, seed: int
) -> list[str]:
    """Why the encoder may have seen test cells, judged from its training record and those of
    the checkpoints it started from (`evaluation.provenance.check_unseen`, as a warning here)."""
    try:
        return check_unseen(record, dataset, split_name, seed, who="the encoder")
    except UserError as err:
        return [str(err)]


def karyo_split_name(dataset: Dataset, split: str = "auto") -> str:
    """`auto`: the `cell` split for BioImLab (no abnormal cell), the `karyo` split otherwise."""
    if split not in KARYO_SPLITS:
        raise UserError(
            f"unknown split {split!r} for the karyotype fit: choose auto, karyo or cell"
        )
    if split != "auto":
        return split
    return "cell" if dataset.layout == "bioimlab" else "karyo"


@dataclass
class KaryotypeFit:
    """Fitted parameters and what they were fitted on (the benchmark tests on `cells` too)."""

    params: KaryotypeParams  # what `karyosearch karyotype` applies
    dataset: Dataset
    split: str  # "karyo" or "cell"
    seed: int
    cells: list[CellRows]  # every cell with its split side and true karyotype
    embedded: EmbeddedFiles  # the crops of the cells used (test, validation, penalty cells)
    size_mean: list[float]  # the training cells' size model (also the label audit's)
    size_sd: list[float]
    use_size: bool  # False: the crops' sizes were left out of the probabilities
    n_simulated: dict[str, int]  # simulated normal and abnormal training cells
    temperature: float
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.row_of = {p: i for i, p in enumerate(self.embedded.paths)}

    def labelled(self, c: CellRows) -> tuple[LabelledCell, list[str]] | None:
        """A cell's embedded crops as a LabelledCell, with their paths (None: nothing read,
        or no readable karyotype)."""
        items, emb = self.dataset.items, self.embedded
        ok = [i for i in c.rows if items[i].path in self.row_of]
        if not ok or c.karyotype is None:
            return None
        rows = [self.row_of[items[i].path] for i in ok]
        return (
            LabelledCell(
                emb.scores[rows],
                np.asarray(self.dataset.labels)[ok],
                c.karyotype,
                c.cell_id,
                emb.embeddings[rows],
                relative_sizes(emb.areas[rows]) if self.use_size else None,
            ),
            [items[i].path for i in ok],
        )

    def crops_on(self, sides: set[str]) -> tuple[list[int], list[int], np.ndarray]:
        """Embedded rows, labels and relative sizes (each within its cell) of the crops of the
        cells on `sides`."""
        items, rows, labels, sizes = self.dataset.items, [], [], []
        for c in self.cells:
            ok = [i for i in c.rows if items[i].path in self.row_of]
            if c.side in sides and ok:
                r = [self.row_of[items[i].path] for i in ok]
                rows += r
                labels += [items[i].label for i in ok]
                sizes.append(relative_sizes(self.embedded.areas[r]))
        return rows, labels, np.concatenate(sizes) if sizes else np.zeros(0)

    def normal_cells(self, sides: set[str]) -> list[LabelledCell]:
        """The labelled normal cells on `sides`."""
        return [
            lc
            for c in self.cells
            if c.side in sides
            and c.karyotype
            and is_normal(c.karyotype)
            and (lc := self.labelled(c)) is not None
        ]


def fit_karyotype(
    encoder: Any,
    dataset: Dataset,
    split: str = "auto",
    seed: int | None = None,
    penalty_cells: str = "train",
    fpr_cells: str = "val",
    max_fpr: float = 0.01,
    homologue_weights: Sequence[float] = HOMOLOGUE_WEIGHT_GRID,
    use_size: bool = True,
    limit_cells: int = 0,
    batch_size: int = 128,
    embed: Callable[[list[str]], EmbeddedFiles] | None = None,
    progress: Callable[[int], None] | None = None,
) -> KaryotypeFit:
    """Fit the karyotype parameters of `encoder` on `dataset` (see the module docstring).

    `seed` defaults to the encoder's training seed (else 0); `limit_cells` keeps at most that
    many cells per split side (every abnormal test cell kept; for smoke runs). `embed(paths)`
    replaces embedding the crops (the benchmark reads saved scores); `progress(n)` follows
    the embedding.
    """
    from ..model.embed import embed_files

    if penalty_cells not in PENALTY_CELLS:
        raise UserError(f"penalty cells {penalty_cells!r}: choose {', '.join(PENALTY_CELLS)}")
    if fpr_cells not in FPR_CELLS:
        raise UserError(f"FPR cells {fpr_cells!r}: choose {', '.join(FPR_CELLS)}")
    record = getattr(encoder, "train_record", {}) or {}
    seed = seed if seed is not None else int(record.get("seed", 0) or 0)
    split_name = karyo_split_name(dataset, split)
    warnings = leak_warnings(record, dataset, split_name, seed)
    cells = cells_by_side(dataset, split_dataset(dataset, split_name, seed), limit_cells, seed)
    penalty_sides = set(penalty_cells.split("+"))
    needed = [c for c in cells if c.side == "test" or c.side == "val" or c.side in penalty_sides]
    paths = [dataset.items[i].path for c in needed for i in c.rows]
    if embed is not None:
        emb = embed(paths)
    else:
        emb = embed_files(encoder, paths, batch_size=batch_size, progress=progress)
    fit = KaryotypeFit(
        KaryotypeParams(),
        dataset,
        split_name,
        seed,
        cells,
        emb,
        [],
        [],
        use_size,
        {},
        0.0,
        warnings,
    )

    # 1. temperature on validation crops; with size, the size model on training crops and the
    # temperature and size weight together on validation crops
    val_rows, val_labels, val_sizes = fit.crops_on({"val"})
    if val_rows:
        temperature = fit_temperature(emb.scores[val_rows], val_labels)
    else:
        temperature = encoder.score_temperature
        warnings.append("no validation crops: the encoder's training temperature is used")
    params = KaryotypeParams(temperature=temperature)
    # the size model of the training cells: a term of the crops' probabilities (unless
    # use_size is off) and, always, the label audit of the test cells
    _, train_labels, train_sizes = fit.crops_on(penalty_sides)
    mean, sd = fit_size_model([train_sizes], [np.asarray(train_labels)])
    if use_size and val_rows:
        params = fit_size_weight(
            emb.scores[val_rows],
            val_sizes,
            val_labels,
            replace(params, size_mean=mean, size_sd=sd),
        )
        temperature = float(params.temperature or temperature)

    # 2. penalties on training cells with simulated abnormalities
    sim_normal, sim_abnormal = simulate_cells(
        [lc for lc, _ in fit.normal_cells(penalty_sides)], seed=seed
    )
    # ...held to the FPR bound on validation cells as well (the encoder never saw them, so
    # its scores there are as sure as on new cells, not as sure as on its training cells)
    held_out: list[LabelledCell] = []
    held_out_abnormal: list[LabelledCell] = []
    if fpr_cells == "val" and "val" not in penalty_sides:
        held_out, held_out_abnormal = simulate_cells(
            [lc for lc, _ in fit.normal_cells({"val"})], seed=seed
        )
    if sim_normal and sim_abnormal:
        params = fit_penalty(
            sim_normal,
            sim_abnormal,
            params,
            max_fpr=max_fpr,
            held_out_normal=held_out,
            held_out_abnormal=held_out_abnormal,
            homologue_weights=homologue_weights,
        )
    else:
        warnings.append("no training cells to fit penalties on: defaults are used")
    params.fitted.update(
        {
            "temperature": {"value": temperature, "n_val_crops": len(val_rows)},
            "size": {
                "weight": params.size_weight,
                "model_cells": penalty_cells,
                "weight_cells": "val",
            }
            if params.size_mean is not None
            else None,
            "dataset": str(dataset.root),
            "split": split_name,
            "seed": seed,
            "penalty_cells": penalty_cells,
            "fpr_cells": fpr_cells,
            "model_fingerprint": getattr(encoder, "fingerprint", ""),
            "at": timestamp(),
        }
    )
    fit.params, fit.size_mean, fit.size_sd, fit.temperature = params, mean, sd, temperature
    fit.n_simulated = {"normal": len(sim_normal), "abnormal": len(sim_abnormal)}
    return fit


def fit_params_file(
    data: str | os.PathLike,
    model: str | os.PathLike,
    out: str | os.PathLike | None = None,
    device: str = "auto",
    layout: Layout = "auto",
    progress: Callable[[int], None] | None = None,
    **options: Any,
) -> tuple[KaryotypeFit, Path]:
    """`karyosearch karyotype fit`: read the dataset, load the checkpoint, `fit_karyotype`
    (`options` are its keywords) and save the parameters to `out` (default: beside the model,
    <model>.karyotype.json, where `karyosearch karyotype` finds them)."""
    from ..model.checkpoint import load_encoder
    from ..util.runtime import pick_device

    dataset = read_dataset(data, layout)
    encoder = load_encoder(model, pick_device(device))
    fit = fit_karyotype(encoder, dataset, progress=progress, **options)
    return fit, save_params(fit.params, out if out is not None else params_path(model))
