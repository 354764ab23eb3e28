"""Splits: the paper's proportions, determinism by seed, and grouped splits that keep every
cell (BioImLab) or patient (G-band) on one side."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from karyosearch.cytogenetics import normal_counts
from karyosearch.data.datasets import Dataset, Item, read_dataset
from karyosearch.data.splits import (
    PAPER_PROPORTIONS,
    SPLITS,
    Split,
    abnormal_patient_split,
    group_split,
    make_split,
    paper_split,
)

from ..conftest import BIOIMLAB, GBAND, need
from ..karyotype.helpers import counts_with, labels_of

PARTS = ("train", "val", "test")
SHARES = np.asarray(PAPER_PROPORTIONS) / sum(PAPER_PROPORTIONS)


def assert_partition(split: Split, n: int) -> None:
    """Disjoint, covering every index 0..n-1 once, each part sorted and int."""
    parts = [split.part(p) for p in PARTS]
    for part in parts:
        assert part.dtype.kind == "i"
        assert np.all(np.diff(part) > 0)
    joined = np.concatenate(parts)
    assert len(joined) == n
    np.testing.assert_array_equal(np.sort(joined), np.arange(n))


def as_tuple(split: Split) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(split.part(p).tolist()) for p in PARTS)


# --- paper split ----------------------------------------------------------------------------


def test_paper_proportions() -> None:
    assert PAPER_PROPORTIONS == (4176, 360, 720)


def test_paper_split_bioimlab_size() -> None:
    split = paper_split(5474, seed=0)
    assert split.name == "paper" and split.seed == 0
    assert (len(split.train), len(split.val), len(split.test)) == (4349, 375, 750)
    assert_partition(split, 5474)


def test_paper_split_of_the_papers_own_count() -> None:
    split = paper_split(5256, seed=1)
    assert (len(split.train), len(split.val), len(split.test)) == PAPER_PROPORTIONS


@pytest.mark.parametrize("n", [1, 10, 100, 999, 28135])
def test_paper_split_partitions_any_n(n: int) -> None:
    split = paper_split(n, seed=7)
    assert_partition(split, n)
    assert abs(len(split.test) - n * SHARES[2]) <= 1
    assert abs(len(split.val) - n * SHARES[1]) <= 1


def test_paper_split_is_deterministic_by_seed() -> None:
    assert as_tuple(paper_split(5474, 3)) == as_tuple(paper_split(5474, 3))
    assert as_tuple(paper_split(5474, 3)) != as_tuple(paper_split(5474, 4))
    # each part differs, not just the order of a few items
    a, b = paper_split(5474, 3), paper_split(5474, 4)
    assert len(np.intersect1d(a.test, b.test)) < len(a.test) // 2


def test_split_part_names() -> None:
    split = paper_split(20, 0)
    with pytest.raises(ValueError, match="no split part"):
        split.part("holdout")


# --- grouped split on made-up groups ----------------------------------------------------------


def made_up_groups(n_groups: int = 60, seed: int = 0) -> list[str]:
    sizes = np.random.default_rng(seed).integers(20, 60, size=n_groups)
    return [f"g{i}" for i, s in enumerate(sizes) for _ in range(s)]


def assert_no_group_straddles(split: Split, groups: list[str]) -> None:
    g = np.asarray(groups, dtype=object)
    sides = [set(g[split.part(p)]) for p in PARTS]
    assert not sides[0] & sides[1]
    assert not sides[0] & sides[2]
    assert not sides[1] & sides[2]


def test_group_split_on_made_up_groups() -> None:
    groups = made_up_groups()
    split = group_split(groups, seed=0)
    assert split.name == "cell"
    assert_partition(split, len(groups))
    assert_no_group_straddles(split, groups)


def test_group_split_is_deterministic_by_seed() -> None:
    groups = made_up_groups()
    assert as_tuple(group_split(groups, 5)) == as_tuple(group_split(groups, 5))
    assert as_tuple(group_split(groups, 5)) != as_tuple(group_split(groups, 6))


def test_group_split_ignores_group_order() -> None:
    """Items of a group need not be adjacent: a shuffled list still keeps groups whole."""
    groups = made_up_groups()
    rng = np.random.default_rng(1)
    shuffled = [groups[i] for i in rng.permutation(len(groups))]
    split = group_split(shuffled, 2)
    assert_partition(split, len(shuffled))
    assert_no_group_straddles(split, shuffled)


def test_make_split_dispatches() -> None:
    groups = made_up_groups(20)
    assert as_tuple(make_split("paper", groups, 1)) == as_tuple(paper_split(len(groups), 1))
    assert as_tuple(make_split("cell", groups, 1)) == as_tuple(group_split(groups, 1))
    assert set(SPLITS) == {"paper", "cell", "karyo"}
    with pytest.raises(ValueError, match="unknown split"):
        make_split("random", groups, 1)


def test_karyo_split_holds_every_abnormal_patient_out_of_training(gband) -> None:
    from karyosearch.cytogenetics import is_normal
    from karyosearch.data.datasets import read_dataset
    from karyosearch.data.splits import cell_karyotypes, split_dataset

    dataset = read_dataset(gband)
    split = split_dataset(dataset, "karyo", 0)
    assert_partition(split, len(dataset))
    groups = dataset.groups()
    assert_no_group_straddles(split, groups)
    karyos = cell_karyotypes(dataset)
    abnormal_cells = {c for c, k in karyos.items() if k is not None and not is_normal(k)}
    # the data README lists 7 47,XXY; 5+4+3 trisomies 18/21; 3 47,XXX; 4 45,X; 1 47,XYY;
    # 1 48,XXYY; 1 47,XY,+13: 29 abnormal cells
    assert len(abnormal_cells) == 29
    abnormal = {groups[i] for i, it in enumerate(dataset.items) if it.cell_id in abnormal_cells}
    test_groups = {groups[i] for i in split.test}
    assert abnormal <= test_groups
    assert split_dataset(dataset, "karyo", 0).test.tolist() == split.test.tolist()


# --- grouped split on the real cells and patients ---------------------------------------------


@pytest.fixture(scope="module", params=["bioimlab", "gband612"])
def real_groups(request: pytest.FixtureRequest) -> list[str]:
    """BioImLab groups are karyotypes (cells); G-band groups are patients."""
    root = need(BIOIMLAB if request.param == "bioimlab" else GBAND)
    return read_dataset(root).groups()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cell_split_on_real_groups(real_groups: list[str], seed: int) -> None:
    n = len(real_groups)
    split = make_split("cell", real_groups, seed)
    assert_partition(split, n)
    assert_no_group_straddles(split, real_groups)
    largest = max(Counter(real_groups).values())
    # whole groups fill test, then val, stopping at the group count nearest the target: each
    # part is within one group of its target; train takes the rest, within two groups
    for part in ("val", "test"):
        target = round(n * SHARES[PARTS.index(part)])
        assert abs(len(split.part(part)) - target) < largest, part
    assert abs(len(split.train) - n * SHARES[0]) < 2 * largest
    for part, share in zip(PARTS, SHARES, strict=True):
        # the share of the data within 1.5 percentage points of the paper's (BioImLab: 95,
        # 8 and 16 cells of 46 images, 79.8 / 6.7 / 13.4 % against 79.5 / 6.8 / 13.7 %)
        assert abs(len(split.part(part)) / n - share) < 0.015, (part, share)
    # train and test (the large parts) within 5 % of their target size
    assert abs(len(split.train) / (n * SHARES[0]) - 1) < 0.05
    assert abs(len(split.test) / (n * SHARES[2]) - 1) < 0.05


def test_cell_split_real_groups_vary_by_seed(real_groups: list[str]) -> None:
    g = np.asarray(real_groups, dtype=object)
    test0 = set(g[group_split(real_groups, 0).test])
    test1 = set(g[group_split(real_groups, 1).test])
    assert test0 != test1


def test_abnormal_patient_split_puts_abnormal_patients_on_test() -> None:
    items = []
    for p in range(20):
        sex = "XY" if p % 2 else "XX"
        counts = counts_with(sex, c21=1) if p in (3, 8) else normal_counts(sex)
        for cell in range(2):
            for j, lab in enumerate(labels_of(counts)):
                items.append(Item(f"/d/{p}.{cell}/{j}.png", int(lab), f"{p}.{cell}", str(p)))
    ds = Dataset(Path("/d"), "gband", items)
    split = abnormal_patient_split(ds, seed=0, test_share=0.2, val_share=0.1)
    assert split.name == "karyo"
    side = {}
    for name in ("train", "val", "test"):
        for i in split.part(name):
            assert side.setdefault(items[i].patient_id, name) == name  # no patient on two sides
    assert side["3"] == side["8"] == "test"
    assert sum(v == "test" for v in side.values()) == 2 + round(0.2 * 18)
    assert sum(v == "val" for v in side.values()) == round(0.1 * 18)
    assert len(split.train) + len(split.val) + len(split.test) == len(items)
    again = abnormal_patient_split(ds, seed=0, test_share=0.2, val_share=0.1)
    assert np.array_equal(again.test, split.test)
