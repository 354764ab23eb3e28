"""The joint assignment: a cell's crops matched to the slots of each karyotype hypothesis.

Minimum-cost matching of crops to slots (`scipy.optimize.linear_sum_assignment` on -log p).
Up to `max_missing` slots may stay empty (a crop that was not cut out) at `missing_cost`
each, and up to `max_extra` crops may be left over as debris at `extra_cost` each. A
hypothesis' cost is its assignment cost plus the penalty of its kind, less the homologue
term (`homologue_score`): the cheapest hypothesis wins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..cytogenetics import Hypothesis, hypotheses
from .params import KaryotypeParams


@dataclass
class Assignment:
    """The best matching of a cell's crops to the slots of one hypothesis."""

    hypothesis: Hypothesis
    assignment_cost: float  # sum of -log p over assigned crops + missing and debris costs
    penalty: float  # prior cost of the hypothesis (0 for normal karyotypes)
    labels: np.ndarray  # (N,) class index per crop; -1 for a crop left over as debris
    missing: np.ndarray  # (classes,) empty slots per class
    homologue_score: float = 0.0  # sum over same-class crop pairs of (cosine - threshold)
    homologue_weight: float = 0.0  # params.homologue_weight when it was scored

    @property
    def cost(self) -> float:
        return self.assignment_cost + self.penalty - self.homologue_weight * self.homologue_score

    @property
    def n_missing(self) -> int:
        return int(self.missing.sum())

    @property
    def n_extra(self) -> int:
        return int((self.labels < 0).sum())


def homologue_score(similarity: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """Sum over pairs of crops assigned the same class (debris, -1, excluded) of
    (similarity - threshold): how much an assignment's classes look like sets of homologues."""
    same = (labels[:, None] == labels[None, :]) & (labels[:, None] >= 0)
    return float((np.asarray(similarity)[np.triu(same, 1)] - threshold).sum())


def crop_similarity(embeddings: np.ndarray) -> np.ndarray:
    """Cosine between every two crops of a cell, from their unit embeddings (N, D)."""
    e = np.asarray(embeddings, dtype=np.float32)
    return e @ e.T


def assign(
    logp: np.ndarray,
    hypothesis: Hypothesis,
    params: KaryotypeParams,
    relaxed: bool = False,
    similarity: np.ndarray | None = None,
) -> Assignment | None:
    """Minimum-cost assignment of crops (rows of `logp`) to the hypothesis' slots.

    Cost = sum over crops of -log p(assigned class) + missing_cost per empty slot
    + extra_cost per crop left as debris. None when the crop count is out of reach
    (more than `max_missing` slots or `max_extra` crops over); `relaxed` lifts both limits.
    With `similarity` (crop_similarity of the crops' embeddings) the assignment is also
    scored for homologue likeness (`homologue_score`), which `cost` weighs by
    `params.homologue_weight`; the matching itself uses `logp` alone.
    """
    from scipy.optimize import linear_sum_assignment

    n = len(logp)
    counts = np.asarray(hypothesis.counts)
    n_slots = int(counts.sum())
    max_extra = n if relaxed else params.max_extra
    if not relaxed and (n_slots - n > params.max_missing or n - n_slots > params.max_extra):
        return None
    slot_class = np.repeat(np.arange(len(counts)), counts)
    n_debris = min(n, max_extra)
    # Filling a slot saves its missing cost: total = sum(matched) + missing_cost * n_slots.
    cost = np.concatenate(
        [-logp[:, slot_class] - params.missing_cost, np.full((n, n_debris), params.extra_cost)],
        axis=1,
    )
    rows, cols = linear_sum_assignment(cost)
    labels = np.full(n, -1, dtype=int)
    in_slot = cols < n_slots
    labels[rows[in_slot]] = slot_class[cols[in_slot]]
    total = float(cost[rows, cols].sum()) + params.missing_cost * n_slots
    missing = counts - np.bincount(labels[labels >= 0], minlength=len(counts))
    likeness = (
        homologue_score(similarity, labels, params.homologue_threshold)
        if similarity is not None
        else 0.0
    )
    return Assignment(
        hypothesis,
        total,
        params.penalty(hypothesis.kind),
        labels,
        missing,
        likeness,
        params.homologue_weight,
    )


def all_assignments(
    logp: np.ndarray, params: KaryotypeParams, similarity: np.ndarray | None = None
) -> tuple[list[Assignment], bool]:
    """Every feasible hypothesis' assignment, in `hypotheses()` order, and whether the cell was
    complete: when the crop count fits no hypothesis within the missing/extra limits (a cell
    cut out far from whole), the limits are lifted and the second value is False."""
    hyps = hypotheses(params.include_xxyy)
    found = [a for h in hyps if (a := assign(logp, h, params, similarity=similarity)) is not None]
    if found:
        return found, True
    return [assign(logp, h, params, True, similarity) for h in hyps], False  # type: ignore[misc]


def rank_hypotheses(
    logp: np.ndarray, params: KaryotypeParams, similarity: np.ndarray | None = None
) -> tuple[list[Assignment], bool]:
    """Every feasible hypothesis' assignment, cheapest first, and whether the cell was complete
    (see `all_assignments`)."""
    ranked, complete = all_assignments(logp, params, similarity)
    order = sorted(
        range(len(ranked)), key=lambda i: (ranked[i].cost, i)
    )  # stable: normal first on ties
    return [ranked[i] for i in order], complete


def hypothesis_costs(
    logp: np.ndarray, params: KaryotypeParams, similarity: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per hypothesis in `hypotheses()` order: the assignment cost (no penalty; inf: out of
    reach) and the homologue score (0 without `similarity`)."""
    hyps = hypotheses(params.include_xxyy)
    index = {h.name: i for i, h in enumerate(hyps)}
    costs, likeness = np.full(len(hyps), np.inf), np.zeros(len(hyps))
    for a in all_assignments(logp, params, similarity)[0]:
        costs[index[a.hypothesis.name]] = a.assignment_cost
        likeness[index[a.hypothesis.name]] = a.homologue_score
    return costs, likeness
