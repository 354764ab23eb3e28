"""Penalty fitting: the prior cost of each abnormal kind (`trisomy`, `sex_gain`,
`monosomy_x`), the debris cost and the homologue weight, fitted on normal training cells and
abnormalities simulated from them (`simulate`), under a false-positive bound.

A cheap debris slot lets 46,XX swallow the third 21 of a trisomy, so the debris cost is fitted
with the penalties. Counts alone cannot tell 45,X from a 46,XX or 46,XY cell whose missing
crop is a sex chromosome: the penalty of 45,X against `missing_cost` is the prior that decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..cytogenetics import KINDS, PENALIZED_KINDS, hypotheses, is_normal
from .assign import hypothesis_costs
from .calibrate import cell_log_probs
from .params import KaryotypeParams
from .simulate import LabelledCell

# Debris costs tried by fit_penalty: from "a spare crop is common" to "never seen".
EXTRA_COST_GRID: tuple[float, ...] = (3.0, 6.0, 10.0, 20.0)
# Homologue-likeness weights tried by fit_penalty (0: the term off).
HOMOLOGUE_WEIGHT_GRID: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0)


@dataclass
class HypothesisCosts:
    """Per cell and hypothesis (`hypotheses()` order): the assignment cost and the homologue
    score, computed once so that penalties and homologue weights can be tried without
    assigning again."""

    costs: np.ndarray  # (cells, hypotheses) assignment cost without penalty; inf: out of reach
    likeness: np.ndarray  # (cells, hypotheses) homologue score (0 without embeddings)
    include_xxyy: bool  # which hypotheses() the columns are

    @classmethod
    def of(cls, cells: Sequence[LabelledCell], params: KaryotypeParams) -> HypothesisCosts:
        n_hyps = len(hypotheses(params.include_xxyy))
        costs, likeness = np.full((len(cells), n_hyps), np.inf), np.zeros((len(cells), n_hyps))
        for ci, c in enumerate(cells):
            logp = cell_log_probs(c.scores, params, c.sizes)
            costs[ci], likeness[ci] = hypothesis_costs(logp, params, c.similarity)
        return cls(costs, likeness, params.include_xxyy)

    def kinds(self, homologue_weight: float) -> KindCosts:
        """The cheapest hypothesis of each kind per cell, with the homologue term weighed in."""
        hyps = hypotheses(self.include_xxyy)
        kind_of = np.array([KINDS.index(h.kind) for h in hyps])
        total = self.costs - homologue_weight * self.likeness
        costs = np.full((len(total), len(KINDS)), np.inf)
        best = [[""] * len(KINDS) for _ in range(len(total))]
        for k in range(len(KINDS)):
            idx = np.flatnonzero(kind_of == k)
            j = idx[np.argmin(total[:, idx], axis=1)]
            costs[:, k] = total[np.arange(len(total)), j]
            for ci, jj in enumerate(j):
                best[ci][k] = hyps[jj].name
        return KindCosts(costs, best)


@dataclass
class KindCosts:
    """Per cell, the cheapest cost within each kind (no penalty), and which hypothesis it was."""

    costs: np.ndarray  # (cells, len(KINDS)) min cost per kind (inf if none)
    best: list[list[str]]  # per cell, per kind, the name of the cheapest hypothesis

    def calls(self, penalties: dict[str, float]) -> list[str]:
        """The winning karyotype of every cell under the given penalties."""
        pen = np.array([0.0] + [penalties[k] for k in PENALIZED_KINDS])
        winner = np.argmin(self.costs + pen, axis=1)
        return [names[k] for names, k in zip(self.best, winner, strict=True)]


def call_rates(truth: Sequence[str], calls: Sequence[str]) -> dict[str, float]:
    """Abnormality-call rates: false-positive rate on normal cells, sensitivity (called
    abnormal), exact rate on abnormal cells, and balanced accuracy (specificity + exact)/2."""
    truth_n = np.array([is_normal(t) for t in truth])
    call_n = np.array([is_normal(c) for c in calls])
    exact = np.array([t == c for t, c in zip(truth, calls, strict=True)])
    fpr = float((~call_n[truth_n]).mean()) if truth_n.any() else 0.0
    sens = float((~call_n[~truth_n]).mean()) if (~truth_n).any() else 1.0
    exact_abn = float(exact[~truth_n].mean()) if (~truth_n).any() else 1.0
    return {
        "fpr": fpr,
        "sensitivity": sens,
        "exact_abnormal": exact_abn,
        "balanced": 0.5 * (1.0 - fpr + exact_abn),
    }


def fit_penalty(
    normal: Sequence[LabelledCell],
    abnormal: Sequence[LabelledCell],
    params: KaryotypeParams,
    max_fpr: float = 0.01,
    grid: np.ndarray | None = None,
    rounds: int = 3,
    tolerance: float = 0.002,
    extra_costs: Sequence[float] = EXTRA_COST_GRID,
    held_out_normal: Sequence[LabelledCell] = (),
    homologue_weights: Sequence[float] = HOMOLOGUE_WEIGHT_GRID,
    held_out_abnormal: Sequence[LabelledCell] = (),
) -> KaryotypeParams:
    """Penalties per abnormal kind, the debris cost and the homologue weight, maximising
    balanced accuracy subject to FPR <= `max_fpr`, on the simulated cells and on
    `held_out_normal` alike.

    Balanced accuracy = (specificity on `normal` + exact-karyotype rate on `abnormal`) / 2.
    For each debris cost in `extra_costs` (a cheap debris slot lets a normal karyotype
    swallow the extra crop of a trisomy), the penalties are found by coordinate search over
    `grid` (default 0..20 by 0.25), a few rounds; among the values within `tolerance` of the
    best the middle one is taken, the most robust to scores a little less sure than the
    training cells' (a single simulated cell should not pin a penalty to a grid edge). Where
    no value meets the FPR bound, the one with the lowest FPR wins. The debris cost and
    homologue weight (`homologue_weights`, tried only where every cell has embeddings) with
    the best (FPR bound met, balanced accuracy) are kept, the cheaper debris and the smaller
    weight on a tie.
    Use training cells (`simulate_cells`), never test cells. An encoder is surer of the
    cells it was trained on than of new ones, so their FPR flatters: `held_out_normal`
    (validation cells the encoder never saw, as `simulate_cells` returns them) holds the
    penalties to the FPR bound on new cells too. With `held_out_abnormal` (abnormalities
    simulated from those validation cells) the debris cost and homologue weight are chosen by
    the balanced accuracy on the held-out cells instead of the training cells': homologues of
    a training cell look more alike to the encoder than those of a new cell do.
    """
    grid = np.round(np.arange(0.0, 20.0001, 0.25), 4) if grid is None else np.asarray(grid, float)
    cells = list(normal) + list(abnormal)
    truth = [c.karyotype for c in cells]
    held_truth = [c.karyotype for c in held_out_normal]
    abnormal_truth = [c.karyotype for c in held_out_abnormal]
    with_embeddings = all(
        c.embeddings is not None for c in [*cells, *held_out_normal, *held_out_abnormal]
    )
    weights = [float(w) for w in homologue_weights] if with_embeddings else [0.0]
    best: tuple[tuple[bool, float], KaryotypeParams, dict[str, float]] | None = None
    for extra in extra_costs:
        trial = replace(params, extra_cost=float(extra))
        costs = HypothesisCosts.of(cells, trial)
        held_costs = HypothesisCosts.of(held_out_normal, trial) if held_out_normal else None
        abnormal_costs = HypothesisCosts.of(held_out_abnormal, trial) if held_out_abnormal else None
        for weight in weights:
            kc = costs.kinds(weight)
            held = (held_costs.kinds(weight), held_truth) if held_costs is not None else None
            pen = _fit_penalties(kc, truth, trial, max_fpr, grid, rounds, tolerance, held)
            rates = call_rates(truth, kc.calls(pen))
            held_calls = held[0].calls(pen) if held is not None else []
            if held is not None:
                rates["fpr_held_out"] = call_rates(held_truth, held_calls)["fpr"]
            if abnormal_costs is not None:
                on_held = call_rates(
                    held_truth + abnormal_truth,
                    held_calls + abnormal_costs.kinds(weight).calls(pen),
                )
                rates["balanced_held_out"] = on_held["balanced"]
            key = (_fpr_ok(rates, max_fpr), rates.get("balanced_held_out", rates["balanced"]))
            if best is None or key > best[0]:
                best = (key, replace(trial, penalties=pen, homologue_weight=weight), rates)
    if best is None:
        raise ValueError("extra_costs or homologue_weights is empty")
    _, fitted_params, rates = best
    fitted = dict(params.fitted)
    fitted["penalty"] = {
        "max_fpr": max_fpr,
        "n_normal": len(normal),
        "n_abnormal": len(abnormal),
        "n_held_out_normal": len(held_out_normal),
        "n_held_out_abnormal": len(held_out_abnormal),
        "extra_cost": fitted_params.extra_cost,
        "homologue_weight": fitted_params.homologue_weight,
        "homologue_weights_tried": weights,
        **{k: round(v, 4) for k, v in rates.items()},
    }
    return replace(fitted_params, fitted=fitted)


def _fit_penalties(
    kc: KindCosts,
    truth: Sequence[str],
    params: KaryotypeParams,
    max_fpr: float,
    grid: np.ndarray,
    rounds: int,
    tolerance: float,
    held: tuple[KindCosts, Sequence[str]] | None = None,
) -> dict[str, float]:
    """Coordinate search of the penalties for one set of assignment costs (see fit_penalty);
    `held`: the held-out normal cells' costs and karyotypes, held to the same FPR bound."""
    pen = dict(params.penalties)

    def score(p: dict[str, float]) -> tuple[bool, float, float]:
        r = call_rates(truth, kc.calls(p))
        if held is not None:
            r["fpr_held_out"] = call_rates(held[1], held[0].calls(p))["fpr"]
        return _fpr_ok(r, max_fpr), r["balanced"], max(r["fpr"], r.get("fpr_held_out", 0.0))

    for _ in range(rounds):
        before = dict(pen)
        for kind in PENALIZED_KINDS:
            results = [score({**pen, kind: float(v)}) for v in grid]
            ok = [i for i, r in enumerate(results) if r[0]]
            if ok:
                top = max(results[i][1] for i in ok)
                best = [i for i in ok if results[i][1] >= top - tolerance - 1e-12]
            else:
                low = min(r[2] for r in results)
                best = [i for i, r in enumerate(results) if r[2] <= low + 1e-12]
            pen[kind] = float(grid[best[len(best) // 2]])
        if pen == before:
            break
    return pen


def _fpr_ok(rates: dict[str, float], max_fpr: float) -> bool:
    return rates["fpr"] <= max_fpr and rates.get("fpr_held_out", 0.0) <= max_fpr
