"""Provenance: where a checkpoint's training images came from, and whether a test part is
one it never saw.

A checkpoint's training record names its dataset, split and seed, those of the checkpoints
it was initialised from (`train --init`) and those of a second dataset trained on jointly
(`train --also`). A test part of the same dataset under
another split or seed would overlap the training images and flatter every number, so it is
refused (`check_unseen`), for `bench`, `train --init` and the karyotype fit alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data.datasets import Dataset
from ..data.splits import SPLITS
from ..errors import UserError


def same_dataset(record: dict[str, Any], dataset: Dataset) -> bool:
    """Whether the checkpoint was trained on this dataset (True when it cannot tell).

    The same folder, or a copy of it elsewhere (same layout and folder name), is the same
    dataset; only a dataset that differs in layout or name counts as another one.
    """
    root = record.get("dataset")
    if isinstance(root, dict):
        root = root.get("root")
    if not root:
        return True
    if Path(str(root)) == dataset.root:
        return True
    layout = record.get("layout")
    if layout and layout != dataset.layout:
        return False
    return Path(str(root)).name == dataset.root.name


def lineage(record: dict[str, Any]) -> list[dict[str, Any]]:
    """A checkpoint's training record, then those of the checkpoints it was initialised from
    (`train --init`), each nested under its successor's "init" key."""
    chain = [record]
    while chain[-1].get("init"):
        chain.append(chain[-1]["init"])
    return chain


def trainings(record: dict[str, Any], who: str = "the model") -> list[tuple[dict[str, Any], str]]:
    """Every training part behind a checkpoint, with who saw it: each record of its
    `lineage` and, after it, the second dataset it trained on jointly (its "also" key)."""
    parts = []
    for depth, rec in enumerate(lineage(record)):
        whose = who if depth == 0 else f"a checkpoint that {who} started from (--init)"
        parts.append((rec, whose))
        if rec.get("also"):
            parts.append((rec["also"], f"{whose}, trained jointly on this dataset (--also),"))
    return parts


def check_unseen(
    record: dict[str, Any], dataset: Dataset, name: str, number: int, who: str = "the model"
) -> list[str]:
    """Refuse a test part of `dataset` that the training behind `record` may have seen.

    Every record of the lineage that trained on this dataset must have trained on the same
    split and seed (its training part is then disjoint from this test part). Returns warnings
    for records that cannot tell; raises UserError for an overlap.
    """
    warnings: list[str] = []
    for rec, whose in trainings(record, who):
        if not same_dataset(rec, dataset):
            continue
        trained_split, trained_seed = rec.get("split"), rec.get("seed")
        if trained_split is not None and name != trained_split:
            raise UserError(
                f"{whose} was trained on the {trained_split!r} split of this dataset: the test "
                f"part of the {name!r} split would overlap its training images (use split "
                f"{trained_split}, or a checkpoint trained with --split {name})"
            )
        if trained_seed is not None and number != int(trained_seed):
            raise UserError(
                f"{whose} was trained on split seed {trained_seed} of this dataset: the test "
                f"part of seed {number} would overlap its training images (use seed "
                f"{trained_seed}, or a checkpoint trained with --seed {number})"
            )
        if trained_split is None or trained_seed is None:
            warnings.append(
                f"{whose} does not record its training split and seed: the test images "
                "may overlap its training images"
            )
    return warnings


def resolve_split(
    record: dict[str, Any], dataset: Dataset, split: str | None, seed: int | None
) -> tuple[str, int, list[str]]:
    """The split name and seed to test on, and warnings; refuses a leaking choice.

    Defaults come from the training record that trained on this dataset (the checkpoint's
    own, one it was initialised from, or its --also part; the checkpoint's own when none
    did). A split or seed other than that record's is refused on the same dataset (its test
    part would overlap the training images) and allowed on another dataset.
    """
    here = [rec for rec, _ in trainings(record) if same_dataset(rec, dataset)]
    source = here[0] if here else record
    trained_split, trained_seed = source.get("split"), source.get("seed")
    name = split if split is not None else (trained_split or "paper")
    number = seed if seed is not None else (int(trained_seed) if trained_seed is not None else 0)
    if name not in SPLITS:
        raise UserError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
    warnings = check_unseen(record, dataset, name, number)
    if not here:
        warnings.append(
            f"the model was trained on another dataset ({record.get('dataset')}); "
            f"testing on the {name!r} split, seed {number}, of {dataset.root}"
        )
    return name, number, warnings
