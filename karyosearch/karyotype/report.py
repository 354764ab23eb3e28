"""The report of one cell: its karyotype, each crop's call and the crops to review, from the
crops' class scores (`karyotype_scores`; pure, no files read)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..cytogenetics import Y, normal_counts
from ..errors import UserError
from ..labels import CLASS_NAMES, NUM_CLASSES
from ..model.predict import ArchiveEvidence
from ..sizes import MIN_CROPS_FOR_SIZE, debris_crops, size_z
from .assign import crop_similarity, rank_hypotheses
from .calibrate import cell_log_probs
from .params import KaryotypeParams


@dataclass
class CropCall:
    """One crop's label in the karyotype, and why it may need a look."""

    path: str
    label: str  # class assigned by the joint assignment (the argmax for a debris crop)
    argmax: str  # class of the independent per-crop maximum
    confidence: float  # independent posterior probability of `label`
    margin: float  # top-1 minus top-2 independent probability
    changed: bool  # the assignment moved the crop off its independent argmax
    extra: bool  # left over as debris: no slot of the karyotype took it
    reasons: list[str] = field(default_factory=list)  # why it is on the review list
    size_z: float | None = None  # relative size in sd of its class's (None: no size model)
    neighbours: list[dict[str, Any]] | None = None  # most similar archived crops (with --index)
    knn_label: str | None = None  # majority class of those neighbours

    def to_json(self) -> dict[str, Any]:
        out = {
            "path": self.path,
            "label": self.label,
            "confidence": round(self.confidence, 4),
            "changed": self.changed,
            "argmax": self.argmax,
            "margin": round(self.margin, 4),
            "extra": self.extra,
            "review": self.reasons,
            "size_z": None if self.size_z is None else round(self.size_z, 2),
        }
        if self.neighbours is not None:
            out["knn_label"] = self.knn_label
            out["neighbours"] = self.neighbours
        return out


@dataclass
class CellKaryotype:
    """The karyotype of one cell, its crops and the crops to review."""

    karyotype: str  # ISCN string of the winning hypothesis
    kind: str  # "normal", "trisomy", "sex_gain" or "monosomy_x"
    counts: dict[str, int]  # crops assigned per class name
    crops: list[CropCall]  # in input order
    review: list[str]  # paths to look at: changed, low margin, unexpected counts, debris
    review_classes: list[str]  # classes whose count is not that of a normal cell, or missing
    missing: list[str]  # class names of empty slots (one entry per missing chromosome)
    hypotheses: list[dict[str, Any]]  # the cheapest hypotheses with their costs
    temperature: float
    complete: bool = True  # False when the crop count fit no hypothesis within the limits
    cell: str | None = None  # the cell folder, where known
    skipped: list[dict[str, str]] = field(default_factory=list)  # files not used, with the reason
    embeddings: np.ndarray | None = field(default=None, repr=False)  # (N, D); not in the JSON

    @property
    def normal(self) -> bool:
        return self.kind == "normal"

    def to_json(self) -> dict[str, Any]:
        return {
            "cell": self.cell,
            "karyotype": self.karyotype,
            "normal": self.normal,
            "kind": self.kind,
            "counts": self.counts,
            "crops": [c.to_json() for c in self.crops],
            "review": self.review,
            "review_classes": self.review_classes,
            "missing": self.missing,
            "extra": [c.path for c in self.crops if c.extra],
            "n_crops": len(self.crops),
            "complete": self.complete,
            "hypotheses": self.hypotheses,
            "temperature": self.temperature,
            "skipped": self.skipped,
        }


def karyotype_scores(
    scores: np.ndarray,
    paths: Sequence[str],
    params: KaryotypeParams,
    top: int = 5,
    cell: str | None = None,
    embeddings: np.ndarray | None = None,
    sizes: np.ndarray | None = None,
    archive: ArchiveEvidence | None = None,
) -> CellKaryotype:
    """The karyotype of one cell from its crops' class scores (N, 24) (pure; no files read).

    `params.temperature` None means the scores are already logits (T = 1). `embeddings`
    (N, D), the crops' unit embeddings, let the hypotheses be weighed for homologue likeness
    (`params.homologue_weight`); `sizes` (N,), the crops' `relative_sizes` in this cell, add
    how long each chromosome is (`params.size_weight`; ignored for a cell of fewer than
    MIN_CROPS_FOR_SIZE crops); with a size model, a crop of no chromosome's size
    (`debris_crops`) is left out of the assignment as debris. `archive`, what an index says
    about each crop (`SearchIndex.archive_evidence`), weighs into its probabilities
    (`cell_log_probs`).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] != NUM_CLASSES:
        raise ValueError(f"scores must be (N, {NUM_CLASSES}), got {scores.shape}")
    if len(scores) != len(paths):
        raise ValueError(f"{len(scores)} score rows for {len(paths)} paths")
    if len(scores) == 0:
        raise UserError("a cell needs at least one chromosome crop")
    if sizes is not None and len(sizes) != len(scores):
        raise ValueError(f"{len(sizes)} sizes for {len(scores)} crops")
    if sizes is not None and len(sizes) < MIN_CROPS_FOR_SIZE:
        sizes = None
    temperature = params.temperature or 1.0
    logp = cell_log_probs(scores, params, sizes, archive)
    sized = sizes is not None and params.size_mean is not None and params.size_sd is not None
    z_all = size_z(sizes, params.size_mean, params.size_sd) if sized else None
    debris = debris_crops(z_all) if z_all is not None else np.zeros(len(scores), bool)
    if debris.sum() * 2 >= len(scores):  # most crops off every class: the size model is
        debris[:] = False  # what does not fit this cell, not the crops
    keep = np.flatnonzero(~debris)
    use_likeness = embeddings is not None and params.homologue_weight > 0
    similarity = crop_similarity(embeddings[keep]) if use_likeness else None
    ranked, complete = rank_hypotheses(logp[keep], params, similarity)
    best = ranked[0]
    assigned_labels = np.full(len(scores), -1)
    assigned_labels[keep] = best.labels
    probs = np.exp(logp)
    top2 = np.sort(probs, axis=1)[:, -2:]
    margins = top2[:, 1] - top2[:, 0]
    argmax = probs.argmax(axis=1)

    # Classes to look at: a count unlike the nearest normal karyotype's, or an empty slot.
    expected_normal = normal_counts("XY" if best.hypothesis.counts[Y] else "XX")
    odd = np.flatnonzero(
        (np.asarray(best.hypothesis.counts) != expected_normal) | (best.missing > 0)
    )
    review_classes = [CLASS_NAMES[i] for i in odd]

    crops: list[CropCall] = []
    for i, path in enumerate(paths):
        extra = bool(assigned_labels[i] < 0)
        label = int(argmax[i]) if extra else int(assigned_labels[i])
        reasons = []
        if debris[i]:
            reasons.append("no chromosome's size")
        elif extra:
            reasons.append("extra crop")
        if label != argmax[i]:
            reasons.append("changed by the assignment")
        if margins[i] < params.review_margin:
            reasons.append("low margin")
        if not extra and label in odd:
            reasons.append("unexpected count")
        z = None if z_all is None else float(z_all[i, label])
        if z is not None and abs(z) > params.review_size_z and not debris[i]:
            reasons.append("unusual size")  # a wrong class, or a structural change
        crops.append(
            CropCall(
                str(path),
                CLASS_NAMES[label],
                CLASS_NAMES[argmax[i]],
                float(probs[i, label]),
                float(margins[i]),
                bool(label != argmax[i]),
                extra,
                reasons,
                z,
            )
        )
    assigned = assigned_labels[assigned_labels >= 0]
    counts = np.bincount(assigned, minlength=NUM_CLASSES)
    missing = [CLASS_NAMES[c] for c in range(NUM_CLASSES) for _ in range(int(best.missing[c]))]
    return CellKaryotype(
        karyotype=best.hypothesis.name,
        kind=best.hypothesis.kind,
        counts={name: int(n) for name, n in zip(CLASS_NAMES, counts, strict=True)},
        crops=crops,
        review=[c.path for c in crops if c.reasons],
        review_classes=review_classes,
        missing=missing,
        hypotheses=[
            {
                "karyotype": a.hypothesis.name,
                "kind": a.hypothesis.kind,
                "cost": round(a.cost, 4),
                "assignment_cost": round(a.assignment_cost, 4),
                "penalty": a.penalty,
                "homologue_score": round(a.homologue_score, 4),
                "missing": a.n_missing,
                "extra": a.n_extra,
            }
            for a in ranked[:top]
        ],
        temperature=float(temperature),
        complete=complete,
        cell=cell,
    )
