"""Simulated abnormal cells and the penalties fitted on them."""

from __future__ import annotations

import numpy as np

from karyosearch.cytogenetics import (
    X,
    Y,
    hypothesis_named,
    true_karyotype,
)
from karyosearch.karyotype.params import (
    KaryotypeParams,
)
from karyosearch.karyotype.penalty import EXTRA_COST_GRID, call_rates, fit_penalty
from karyosearch.karyotype.report import karyotype_scores
from karyosearch.karyotype.simulate import LabelledCell, simulate_cells
from karyosearch.labels import class_index

from .helpers import (
    PARAMS,
    _cells,
    counts_with,
    homologue_embeddings,
    labels_of,
    paths_of,
    scores_of,
    with_embeddings,
)


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
