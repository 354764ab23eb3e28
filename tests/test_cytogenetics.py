"""ISCN strings, hypotheses and the true karyotype of a labelled cell."""

from __future__ import annotations

from karyosearch.cytogenetics import (
    hypotheses,
    hypothesis_named,
    iscn,
    normal_counts,
    true_karyotype,
)

from .karyotype.helpers import (
    counts_with,
    labels_of,
)


def test_iscn_strings() -> None:
    assert iscn(normal_counts("XY")) == "46,XY"
    assert iscn(normal_counts("XX")) == "46,XX"
    assert iscn(counts_with("XX", c21=1)) == "47,XX,+21"
    assert iscn(counts_with("XY", c13=1)) == "47,XY,+13"
    assert iscn(normal_counts("X")) == "45,X"
    for sex in ("XXY", "XXX", "XYY"):
        assert iscn(normal_counts(sex)) == f"47,{sex}"
    assert iscn(normal_counts("XXYY")) == "48,XXYY"
    names = [h.name for h in hypotheses()]
    assert names[:2] == ["46,XX", "46,XY"]
    assert len(names) == len(set(names)) == 2 + 44 + 5
    assert {"47,XY,+18", "47,XX,+21", "45,X", "47,XXY", "47,XXX", "47,XYY", "48,XXYY"} <= set(names)
    assert "48,XXYY" not in [h.name for h in hypotheses(include_xxyy=False)]
    assert hypothesis_named("45,X").kind == "monosomy_x"


def test_true_karyotype_rule() -> None:
    assert true_karyotype(labels_of(normal_counts("XY"))) == "46,XY"
    assert true_karyotype(labels_of(counts_with("XX", c20=-1))) == "46,XX"  # a crop not cut out
    assert true_karyotype(labels_of(normal_counts("X"))) == "45,X"
    assert true_karyotype(labels_of(counts_with("XY", c18=1))) == "47,XY,+18"
    assert true_karyotype(labels_of(counts_with("XXY", c14=-1))) == "47,XXY"
    assert true_karyotype(labels_of(counts_with("XXYY", c15=-1, c16=-1))) == "48,XXYY"
    counts = normal_counts("")
    counts[[12, 19, 20, 21]] = 0
    assert true_karyotype(labels_of(counts)) is None  # 36 crops, no sex chromosome
