"""Whole-cell karyotyping on hand-made score matrices (no encoder, no files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from karyosearch.cytogenetics import (
    X,
    Y,
    hypotheses,
    hypothesis_named,
    iscn,
    normal_counts,
    true_karyotype,
)
from karyosearch.data.datasets import Dataset, Item
from karyosearch.data.splits import abnormal_patient_split
from karyosearch.errors import UserError
from karyosearch.karyotype.assign import assign, crop_similarity, homologue_score
from karyosearch.karyotype.calibrate import cell_log_probs, fit_size_weight, fit_temperature
from karyosearch.karyotype.cells import collect_cell, find_cell_folders
from karyosearch.karyotype.params import (
    KaryotypeParams,
    load_params,
    params_path,
    resolve_params,
    save_params,
)
from karyosearch.karyotype.penalty import EXTRA_COST_GRID, call_rates, fit_penalty
from karyosearch.karyotype.report import karyotype_scores
from karyosearch.karyotype.simulate import LabelledCell, simulate_cells
from karyosearch.labels import CLASS_NAMES, class_index
from karyosearch.model.predict import log_probs
from karyosearch.sizes import fit_size_model, labels_contradicted, relative_sizes

from .conftest import chromosome_array, write_image

PARAMS = KaryotypeParams(temperature=1.0)


def labels_of(counts: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(len(counts)), counts)


def scores_of(
    labels: np.ndarray, seed: int = 0, sure: float = 9.0, noise: float = 0.5
) -> np.ndarray:
    """Logits (T = 1) that are near one-hot on the true class, with a little noise."""
    rng = np.random.default_rng(seed)
    s = rng.normal(0.0, noise, (len(labels), len(CLASS_NAMES)))
    s[np.arange(len(labels)), labels] += sure
    return s


def paths_of(n: int) -> list[str]:
    return [f"crop{i:02d}.png" for i in range(n)]


def counts_with(sex: str, **delta: int) -> np.ndarray:
    counts = normal_counts(sex)
    for name, d in delta.items():
        counts[class_index(name.lstrip("c"))] += d
    return counts


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


def test_temperature_fit_recovers_a_known_temperature() -> None:
    rng = np.random.default_rng(0)
    true_t = 0.05
    scores = rng.normal(0.0, 0.1, (4000, len(CLASS_NAMES)))  # cosine-like scale
    p = np.exp(log_probs(scores, true_t))
    labels = np.array([rng.choice(len(CLASS_NAMES), p=row) for row in p])
    t = fit_temperature(scores, labels)
    assert abs(np.log(t / true_t)) < 0.15


def test_params_round_trip_and_defaults(tmp_path: Path) -> None:
    params = KaryotypeParams(temperature=0.07, penalties={"trisomy": 2.5}, missing_cost=2.0)
    assert params.penalties["sex_gain"] == KaryotypeParams().penalties["sex_gain"]
    model = tmp_path / "m.pt"
    assert params_path(model) == tmp_path / "m.karyotype.json"
    save_params(params, params_path(model))
    assert resolve_params(model) == params
    assert load_params(params_path(model)).penalties["trisomy"] == 2.5
    assert resolve_params(tmp_path / "other.pt") == KaryotypeParams()
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError):
        load_params(tmp_path / "bad.json")
    with pytest.raises(ValueError):
        KaryotypeParams(penalties={"nonsense": 1.0})


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


def _cells(n: int, seed: int) -> list[LabelledCell]:
    out = []
    for i in range(n):
        sex = "XX" if i % 2 else "XY"
        labels = labels_of(normal_counts(sex))
        out.append(
            LabelledCell(
                scores_of(labels, seed=seed + i, sure=6.0, noise=0.8),
                labels,
                f"46,{sex}",
                f"cell{i}",
            )
        )
    return out


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


def homologue_embeddings(labels: np.ndarray, seed: int = 0, dim: int = 64) -> np.ndarray:
    """Unit embeddings where crops of one class lie close together (homologues look alike)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(CLASS_NAMES), dim))
    e = centres[labels] + 0.3 * rng.normal(size=(len(labels), dim))
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def with_embeddings(cells: list[LabelledCell], seed: int) -> list[LabelledCell]:
    """The cells with homologue_embeddings of their labels (seeded per cell)."""
    return [
        LabelledCell(
            c.scores, c.labels, c.karyotype, c.cell_id, homologue_embeddings(c.labels, seed + i)
        )
        for i, c in enumerate(cells)
    ]


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


def test_simulated_cells_carry_their_true_karyotypes() -> None:
    normal, abnormal = simulate_cells(_cells(6, 0), seed=0)
    assert len(normal) == 12
    for c in normal + abnormal:
        assert len(c.scores) == len(c.labels)
        assert true_karyotype(c.labels) == c.karyotype
    kinds = {hypothesis_named(c.karyotype).kind for c in abnormal}
    assert kinds == {"trisomy", "sex_gain", "monosomy_x"}


def test_fit_penalty_separates_simulated_abnormal_cells() -> None:
    normal, abnormal = simulate_cells(_cells(6, 10), seed=1)
    params = fit_penalty(normal, abnormal, PARAMS, max_fpr=0.0)
    fit = params.fitted["penalty"]
    assert fit["fpr"] == 0.0
    assert fit["exact_abnormal"] > 0.9
    assert all(0.0 <= v <= 20.0 for v in params.penalties.values())
    assert params.extra_cost == fit["extra_cost"] and params.extra_cost in EXTRA_COST_GRID
    # The fitted params call fresh simulated cells as well.
    normal2, abnormal2 = simulate_cells(_cells(4, 50), seed=2)
    cells = normal2 + abnormal2
    calls = [karyotype_scores(c.scores, paths_of(len(c.labels)), params).karyotype for c in cells]
    rates = call_rates([c.karyotype for c in cells], calls)
    assert rates["fpr"] == 0.0 and rates["sensitivity"] > 0.9


def test_simulation_and_fit_carry_the_embeddings() -> None:
    """Simulated cells keep each crop's embedding on its row (removed crops and added donors
    included), and the fit chooses a homologue weight from its grid when every cell has
    embeddings, and none without."""
    base = _cells(6, 10)
    # tag embeddings: column 0 the crop's label, column 1 its cell
    tagged = [
        LabelledCell(
            c.scores, c.labels, c.karyotype, c.cell_id, np.c_[c.labels, np.full(len(c.labels), i)]
        )
        for i, c in enumerate(base)
    ]
    normal, abnormal = simulate_cells(tagged, seed=1)
    for c in normal + abnormal:
        assert np.array_equal(c.embeddings[:, 0], c.labels)
        own = int(c.cell_id[4])  # "cell3+21" -> 3
        donors = np.flatnonzero(c.embeddings[:, 1] != own)
        gained = "+" in c.cell_id.split("-")[0]
        assert list(donors) == ([len(c.labels) - 1] if gained else [])

    params = fit_penalty(
        *simulate_cells(with_embeddings(base, 0), seed=1),
        PARAMS,
        max_fpr=0.0,
        homologue_weights=(0.0, 1.0),
    )
    assert params.homologue_weight in (0.0, 1.0)
    assert params.fitted["penalty"]["homologue_weights_tried"] == [0.0, 1.0]
    plain = fit_penalty(*simulate_cells(base, seed=1), PARAMS, max_fpr=0.0)
    assert plain.homologue_weight == 0.0
    assert plain.fitted["penalty"]["homologue_weights_tried"] == [0.0]


def test_held_out_abnormal_cells_choose_the_homologue_weight() -> None:
    """Training cells are scored surely, so the homologue term changes nothing there and the
    smallest weight wins the tie. Held-out trisomy 18 cells whose third 18 scores a little
    like a Y need the term: chosen on them, the weight is positive and they are called +18."""
    normal, abnormal = simulate_cells(with_embeddings(_cells(6, 10), 0), seed=1)
    held_normal = simulate_cells(with_embeddings(_cells(4, 70), 40), seed=2)[0]
    held_abnormal = []
    for i in range(4):
        labels = labels_of(counts_with("XY", c18=1))
        s = scores_of(labels, seed=80 + i, sure=6.0, noise=0.8)
        third = np.flatnonzero(labels == class_index("18"))[2]
        s[third, Y] = s[third, class_index("18")] + 3.0
        emb = homologue_embeddings(labels, 80 + i)
        held_abnormal.append(LabelledCell(s, labels, "47,XY,+18", f"held{i}", emb))
    weights = (0.0, 1.0, 4.0)
    on_train = fit_penalty(normal, abnormal, PARAMS, max_fpr=0.0, homologue_weights=weights)
    assert on_train.homologue_weight == 0.0
    chosen = fit_penalty(
        normal,
        abnormal,
        PARAMS,
        max_fpr=0.0,
        homologue_weights=weights,
        held_out_normal=held_normal,
        held_out_abnormal=held_abnormal,
    )
    assert chosen.homologue_weight > 0.0
    fit = chosen.fitted["penalty"]
    assert fit["n_held_out_abnormal"] == 4 and fit["fpr_held_out"] == 0.0
    calls = [
        karyotype_scores(c.scores, paths_of(47), chosen, embeddings=c.embeddings).karyotype
        for c in held_abnormal
    ]
    assert calls == ["47,XY,+18"] * 4


def test_fit_penalty_keeps_the_fpr_bound_on_held_out_normal_cells() -> None:
    """Held-out cells are scored less surely than training cells: one crop of each is
    taken for another class. Fitted on the training cells alone the penalties flag some of
    them; held to the bound on them too, none."""
    normal, abnormal = simulate_cells(_cells(6, 10), seed=1)
    held = []
    for c in _cells(6, 90):
        scores = c.scores.copy()
        row = int(np.flatnonzero(c.labels == class_index("7"))[0])
        scores[row, class_index("7")] -= 7.0  # the encoder now takes this 7 for ...
        scores[row, X] += 3.0  # ... an X (or anything but a 7)
        held.append(LabelledCell(scores, c.labels, c.karyotype, c.cell_id))

    def fpr(params: KaryotypeParams) -> float:
        calls = [karyotype_scores(c.scores, paths_of(len(c.labels)), params) for c in held]
        return call_rates([c.karyotype for c in held], [r.karyotype for r in calls])["fpr"]

    alone = fit_penalty(normal, abnormal, PARAMS, max_fpr=0.0)
    assert fpr(alone) > 0
    both = fit_penalty(normal, abnormal, PARAMS, max_fpr=0.0, held_out_normal=held)
    assert fpr(both) == 0.0
    assert both.fitted["penalty"]["fpr_held_out"] == 0.0
    assert both.fitted["penalty"]["n_held_out_normal"] == len(held)


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


def test_cell_folder_checks(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="empty"):
        collect_cell(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match="no chromosome images"):
        collect_cell(tmp_path)
    write_image(tmp_path / "clase1" / "a.png", chromosome_array())
    files = collect_cell(tmp_path)
    assert [p.name for p in files.images] == ["a.png"] and [p.name for p in files.others] == [
        "notes.txt"
    ]
    root = tmp_path / "cells"
    for cell in ("c1", "c2"):
        write_image(root / cell / "clase1" / "a.png", chromosome_array())
    assert [p.name for p in find_cell_folders(root)] == ["c1", "c2"]
    assert X == CLASS_NAMES.index("X") and Y == CLASS_NAMES.index("Y")


def test_karyogram_png_with_extra_and_missing_crops(tmp_path: Path) -> None:
    from karyosearch.karyotype.karyogram import render_karyogram

    labels = labels_of(counts_with("XY", c7=-1))
    junk = scores_of(np.array([0]), seed=8)  # a third "1": cheaper as debris than as a 7
    s = np.vstack([scores_of(labels, seed=7), junk])
    r = karyotype_scores(s, paths_of(len(s)), KaryotypeParams(temperature=1.0, extra_cost=2.0))
    assert r.missing == ["7"] and r.to_json()["extra"] == [f"crop{len(s) - 1:02d}.png"]
    images = {c.path: chromosome_array(30 + i % 20, 12, seed=i) for i, c in enumerate(r.crops)}
    out = render_karyogram(r, tmp_path / "k" / "cell.png", images=images)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(out) as im:
        assert im.size[0] > 1000


# --- size within the cell ----------------------------------------------------------------

# Made-up chromosome areas by class: the 1 largest, the 21 and Y among the smallest.
CLASS_AREA = np.linspace(2000.0, 400.0, len(CLASS_NAMES))


def sized_cell(labels: np.ndarray, seed: int, scale: float = 1.0, spread: float = 0.05):
    """Areas of a cell's crops: the class's area x the cell's condensation `scale`, with a
    log-normal spread per crop."""
    rng = np.random.default_rng(seed)
    return CLASS_AREA[labels] * scale * np.exp(rng.normal(0.0, spread, len(labels)))


def test_relative_sizes_ignore_the_cells_scale() -> None:
    areas = np.array([100.0, 400.0, 200.0, 50.0, 800.0])
    rel = relative_sizes(areas)
    assert np.median(rel) == 0.0
    np.testing.assert_allclose(rel, np.log(areas / 200.0))
    np.testing.assert_allclose(relative_sizes(areas * 3.7), rel)  # condensation, scanner scale


def test_fit_size_model_recovers_the_class_sizes() -> None:
    labels = labels_of(normal_counts("XY"))
    cells = [sized_cell(labels, seed=i, scale=0.7 + 0.1 * (i % 6)) for i in range(60)]
    mean, sd = fit_size_model([relative_sizes(a) for a in cells], [labels] * len(cells))
    want = np.log(CLASS_AREA) - np.median(np.log(CLASS_AREA[labels]))
    np.testing.assert_allclose(mean, want, atol=0.03)
    assert np.all((np.asarray(sd) > 0.03) & (np.asarray(sd) < 0.08))  # the spread, 0.05


def test_label_audit_finds_mixed_up_labels_and_fragments_only() -> None:
    labels = labels_of(normal_counts("XX"))
    train = [sized_cell(labels, seed=i) for i in range(60)]
    mean, sd = fit_size_model([relative_sizes(a) for a in train], [labels] * len(train))
    for seed in range(100, 120):  # new normal cells, rightly labelled: nothing flagged
        sizes = relative_sizes(sized_cell(labels, seed=seed, scale=1.3))
        assert len(labels_contradicted(sizes, labels, mean, sd)) == 0
    areas = sized_cell(labels, seed=7)
    # labels mixed up: the 1s labelled 21 and the 21s labelled 1 (a third of the size)
    g1, g21 = np.flatnonzero(labels == 0), np.flatnonzero(labels == class_index("21"))
    mixed = labels.copy()
    mixed[g1], mixed[g21] = class_index("21"), 0
    found = labels_contradicted(relative_sizes(areas), mixed, mean, sd)
    assert set(found) == set(g1) | set(g21)
    fragment = areas.copy()
    fragment[0] = 3.0  # a speck labelled 1
    assert list(labels_contradicted(relative_sizes(fragment), labels, mean, sd)) == [0]


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


def test_fit_size_weight_weighs_size_by_what_it_tells() -> None:
    """On validation crops whose scores confuse classes of different size, the fitted size
    weight is well above 0 and lowers the NLL; where the sizes carry no class information
    it stays near 0."""
    labels = labels_of(normal_counts("XX"))
    train = [labels] * 30
    mean, sd = fit_size_model(
        [relative_sizes(sized_cell(t, seed=i)) for i, t in enumerate(train)], train
    )
    base = KaryotypeParams(temperature=1.0, size_mean=mean, size_sd=sd)
    val_labels = np.concatenate([labels] * 20)
    scores = scores_of(val_labels, seed=5, sure=1.5, noise=1.0)
    informative = np.concatenate(
        [relative_sizes(sized_cell(labels, seed=100 + i)) for i in range(20)]
    )
    fitted = fit_size_weight(scores, informative, val_labels, base)
    rows = np.arange(len(val_labels))
    assert fitted.size_weight > 0.3
    nll = -cell_log_probs(scores, fitted, informative)[rows, val_labels].mean()
    plain = -log_probs(scores, fit_temperature(scores, val_labels))[rows, val_labels].mean()
    assert nll < plain - 0.1
    noise = np.random.default_rng(7).permutation(informative)
    assert fit_size_weight(scores, noise, val_labels, base).size_weight < 0.1


def test_simulated_cells_carry_each_crops_size() -> None:
    """A removed crop takes its size with it; an added donor crop keeps its size relative to
    its own cell."""
    base = _cells(6, 20)
    tagged = [
        LabelledCell(c.scores, c.labels, c.karyotype, c.cell_id, sizes=c.labels + 100.0 * i)
        for i, c in enumerate(base)
    ]
    normal, abnormal = simulate_cells(tagged, seed=2)
    for c in normal + abnormal:
        np.testing.assert_array_equal(c.sizes % 100.0, c.labels)
        own = int(c.cell_id[4])
        donors = np.flatnonzero(c.sizes // 100.0 != own)
        assert list(donors) == ([len(c.labels) - 1] if "+" in c.cell_id.split("-")[0] else [])
