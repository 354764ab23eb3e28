"""Class names: 24 classes, "1".."22", "X", "Y", with the datasets' 23/24 spellings accepted."""

from __future__ import annotations

import pytest

from karyosearch.labels import CLASS_NAMES, NUM_CLASSES, class_index, class_name


def test_the_24_names_in_order() -> None:
    assert NUM_CLASSES == len(CLASS_NAMES) == 24
    assert CLASS_NAMES[:3] == ("1", "2", "3") and CLASS_NAMES[21:] == ("22", "X", "Y")


@pytest.mark.parametrize(
    "given, index",
    [("1", 0), ("22", 21), ("X", 22), ("Y", 23), ("23", 22), ("24", 23), ("x", 22), (" y ", 23)]
    + [(7, 6), (23, 22), (24, 23)],
)
def test_every_spelling_maps_to_its_index(given: str | int, index: int) -> None:
    assert class_index(given) == index


@pytest.mark.parametrize("bad", ["0", "25", "clase25", "", "XX", "21b", -1])
def test_anything_else_is_refused_with_the_expected_names(bad: str | int) -> None:
    with pytest.raises(ValueError, match="expected 1..22, X, Y, 23 or 24"):
        class_index(bad)


def test_names_and_indices_round_trip() -> None:
    assert [class_index(class_name(i)) for i in range(NUM_CLASSES)] == list(range(NUM_CLASSES))
