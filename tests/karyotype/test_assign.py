"""Whole-cell karyotyping on hand-made score matrices: the joint assignment and the report
(no encoder, no files)."""

from __future__ import annotations

import numpy as np
import pytest

from karyosearch.cytogenetics import (
    Y,
    hypothesis_named,
    normal_counts,
)
from karyosearch.karyotype.assign import assign, crop_similarity, homologue_score
from karyosearch.karyotype.calibrate import cell_log_probs
from karyosearch.karyotype.params import (
    KaryotypeParams,
)
from karyosearch.karyotype.report import karyotype_scores
from karyosearch.labels import CLASS_NAMES, class_index
from karyosearch.model.predict import log_probs
from karyosearch.sizes import fit_size_model, relative_sizes

from .helpers import (
    CLASS_AREA,
    PARAMS,
    counts_with,
    homologue_embeddings,
    labels_of,
    paths_of,
    scores_of,
    sized_cell,
)


def test_normal_cell_with_confused_crops_is_fixed_by_the_assignment() -> None:
    labels = labels_of(normal_counts("XY"))
    s = scores_of(labels)
    # One 21 looks more like a 22 and one 9 more like a 10: the argmax gives three 22s and
    # three 10s, which the counts of a cell do not allow.
    i21, i9 = np.flatnonzero(labels == 20)[0], np.flatnonzero(labels == 8)[0]
    s[i21, 21] = s[i21, 20] + 1.5
    s[i9, 9] = s[i9, 8] + 1.5
    assert s.argmax(1)[i21] == 21 and s.argmax(1)[i9] == 9
    r = karyotype_scores(s, paths_of(len(labels)), PARAMS)
    assert r.karyotype == "46,XY" and r.normal
    assigned = np.array([class_index(c.label) for c in r.crops])
    assert np.array_equal(assigned, labels)
    changed = {c.path for c in r.crops if c.changed}
    assert changed == {f"crop{i21:02d}.png", f"crop{i9:02d}.png"}
    assert changed <= set(r.review)
    assert r.counts["21"] == r.counts["22"] == 2 and r.missing == []
    assert all(r.counts[n] == (2 if n not in "XY" else 1) for n in CLASS_NAMES)


def test_trisomy_21_is_called_and_not_forced_to_two() -> None:
    labels = labels_of(counts_with("XY", c21=1))
    r = karyotype_scores(scores_of(labels, seed=1), paths_of(len(labels)), PARAMS)
    assert r.karyotype == "47,XY,+21"
    assert r.kind == "trisomy" and not r.normal
    assert r.counts["21"] == 3
    assert not any(c.changed for c in r.crops)
    assert r.review_classes == ["21"]
    threes = {c.path for c in r.crops if c.label == "21"}
    assert len(threes) == 3 and threes <= set(r.review)
    assert r.hypotheses[0]["karyotype"] == "47,XY,+21"


def test_45x_is_called_from_one_x_and_no_y() -> None:
    labels = labels_of(normal_counts("X"))
    assert len(labels) == 45
    r = karyotype_scores(scores_of(labels, seed=2), paths_of(45), PARAMS)
    assert r.karyotype == "45,X"
    assert r.kind == "monosomy_x"
    assert r.counts["X"] == 1 and r.counts["Y"] == 0
    assert r.missing == []


def test_normal_cell_with_a_missing_crop_stays_normal() -> None:
    labels = labels_of(counts_with("XX", c7=-1))
    assert len(labels) == 45
    r = karyotype_scores(scores_of(labels, seed=3), paths_of(45), PARAMS)
    assert r.karyotype == "46,XX"
    assert r.normal
    assert r.missing == ["7"]
    assert r.review_classes == ["7"]
    assert r.to_json()["missing"] == ["7"]
    ranked = [h["karyotype"] for h in r.hypotheses]
    assert ranked[0] == "46,XX"
    # Under 46,XY one X crop has no slot of its own: it fills the empty 7 slot or is debris.
    a = assign(log_probs(scores_of(labels, seed=3), 1.0), hypothesis_named("46,XY"), PARAMS)
    assert a is not None and a.cost > r.hypotheses[0]["cost"] + 3.0


def test_a_cell_missing_more_crops_than_allowed_is_still_reported() -> None:
    labels = labels_of(normal_counts("XY"))[:36]  # like the G-band cell with 36 images
    r = karyotype_scores(scores_of(labels, seed=4), paths_of(36), PARAMS)
    assert not r.complete
    assert len(r.missing) >= 45 - 36
    assert r.counts["1"] == 2 and sum(r.counts.values()) == 36


def test_extra_crop_can_be_debris_when_allowed() -> None:
    labels = labels_of(normal_counts("XY"))
    s = scores_of(labels, seed=5)
    junk = np.zeros((1, len(CLASS_NAMES)))  # a crop that looks like no class in particular
    params = KaryotypeParams(temperature=1.0, extra_cost=2.0)
    r = karyotype_scores(np.vstack([s, junk]), paths_of(47), params)
    assert r.karyotype == "46,XY"
    assert r.to_json()["extra"] == ["crop46.png"]
    assert "crop46.png" in r.review


def test_json_keys_follow_the_design() -> None:
    labels = labels_of(normal_counts("XX"))
    out = karyotype_scores(scores_of(labels, seed=6), paths_of(46), PARAMS, cell="c1").to_json()
    assert {"karyotype", "counts", "crops", "review"} <= set(out)
    assert set(out["counts"]) == set(CLASS_NAMES)
    assert sum(out["counts"].values()) == 46
    crop = out["crops"][0]
    assert {"path", "label", "confidence", "changed"} <= set(crop)
    assert 0.0 <= crop["confidence"] <= 1.0
    assert isinstance(out["review"], list)
    assert out["hypotheses"][0]["karyotype"] == "46,XX"
    import json

    json.dumps(out)


def test_homologue_score_sums_same_class_pairs_by_hand() -> None:
    sim = np.array(
        [
            [1.0, 0.9, 0.2, 0.1],
            [0.9, 1.0, 0.3, 0.0],
            [0.2, 0.3, 1.0, 0.4],
            [0.1, 0.0, 0.4, 1.0],
        ]
    )
    # crops 0, 1 and 2 in class 5 (pairs 0-1, 0-2, 1-2), crop 3 debris
    labels = np.array([5, 5, 5, -1])
    assert homologue_score(sim, labels, 0.5) == pytest.approx(
        (0.9 - 0.5) + (0.2 - 0.5) + (0.3 - 0.5)
    )
    # no two crops share a class: nothing to score
    assert homologue_score(sim, np.array([0, 1, 2, 3]), 0.5) == 0.0


def test_homologue_likeness_tells_a_third_18_from_a_second_y() -> None:
    """47,XY,+18 where the third 18 scores a little more like a Y: by the scores alone the cell
    reads 47,XYY; its embedding looks like the other two 18s, so with the homologue term the
    cell reads 47,XY,+18."""
    labels = labels_of(counts_with("XY", c18=1))
    s = scores_of(labels, seed=7)
    third = np.flatnonzero(labels == class_index("18"))[2]
    s[third, Y] = s[third, class_index("18")] + 1.0
    emb = homologue_embeddings(labels, seed=7)
    penalties = {"trisomy": 1.0, "sex_gain": 1.0}
    plain = KaryotypeParams(temperature=1.0, penalties=penalties)
    assert karyotype_scores(s, paths_of(47), plain, embeddings=emb).karyotype == "47,XYY"
    weighed = KaryotypeParams(temperature=1.0, penalties=penalties, homologue_weight=2.0)
    r = karyotype_scores(s, paths_of(47), weighed, embeddings=emb)
    assert r.karyotype == "47,XY,+18"
    assert r.hypotheses[0]["homologue_score"] > r.hypotheses[1]["homologue_score"]
    # without embeddings the weight has nothing to weigh
    assert karyotype_scores(s, paths_of(47), weighed).karyotype == "47,XYY"
    assert crop_similarity(emb).shape == (47, 47)


def test_size_decides_a_crop_the_encoder_cannot_place() -> None:
    """47 crops whose extra one scores the same for 1 and 21: by scores alone +1 and +21 tie;
    its size (a 21's) makes it 47,XY,+21, and a 1's size 47,XY,+1."""
    counts = counts_with("XY", c21=1)
    labels = labels_of(counts)
    scores = scores_of(labels, seed=3)
    extra = int(np.flatnonzero(labels == class_index("21"))[-1])
    scores[extra] = 0.0
    scores[extra, [class_index("1"), class_index("21")]] = 9.0
    train = [labels_of(normal_counts("XY"))] * 40
    mean, sd = fit_size_model(
        [relative_sizes(sized_cell(t, seed=i)) for i, t in enumerate(train)], train
    )
    params = KaryotypeParams(temperature=1.0, size_weight=1.0, size_mean=mean, size_sd=sd)
    areas = sized_cell(labels, seed=99)
    result = karyotype_scores(scores, paths_of(len(labels)), params, sizes=relative_sizes(areas))
    assert result.karyotype == "47,XY,+21"
    assert result.crops[extra].label == "21"
    areas[extra] = CLASS_AREA[class_index("1")]
    result = karyotype_scores(scores, paths_of(len(labels)), params, sizes=relative_sizes(areas))
    assert result.karyotype == "47,XY,+1"
    # a 21 the scores are sure of (and the size weighed lightly) but twice the 21's area:
    # kept as a 21, and marked for review
    sure = int(np.flatnonzero(labels == class_index("21"))[0])
    areas = sized_cell(labels, seed=99)
    areas[sure] = 2 * CLASS_AREA[class_index("21")]
    light = KaryotypeParams(temperature=1.0, size_weight=0.02, size_mean=mean, size_sd=sd)
    paths = paths_of(len(labels))
    crop = karyotype_scores(scores, paths, light, sizes=relative_sizes(areas)).crops[sure]
    assert crop.label == "21" and crop.size_z > 3 and "unusual size" in crop.reasons
    assert karyotype_scores(scores, paths, light).crops[sure].size_z is None
    # a speck the scores take for a sure 21: no chromosome's size, so debris, not a +21
    speck_labels = labels_of(normal_counts("XY"))
    speck_scores = scores_of(np.append(speck_labels, class_index("21")), seed=5)
    speck_areas = np.append(sized_cell(speck_labels, seed=7), 5.0)
    speck = karyotype_scores(speck_scores, paths_of(47), params, sizes=relative_sizes(speck_areas))
    assert speck.karyotype == "46,XY"
    assert speck.crops[-1].extra and "no chromosome's size" in speck.crops[-1].reasons
    assert not any(c.extra for c in speck.crops[:-1])
    assert karyotype_scores(speck_scores, paths_of(47), params).karyotype == "47,XY,+21"
    # no sizes, or weight 0: the size model is not used
    np.testing.assert_allclose(
        cell_log_probs(scores, params), cell_log_probs(scores, KaryotypeParams(temperature=1.0))
    )
    # a handful of crops has no median to measure size against: size is not used
    few = karyotype_scores(scores[:10], paths[:10], params, sizes=relative_sizes(areas[:10]))
    assert all(c.size_z is None for c in few.crops)
    with pytest.raises(ValueError, match="sizes for"):
        karyotype_scores(scores, paths_of(len(labels)), params, sizes=np.zeros(3))
