"""Whole-cell karyotyping: name all chromosomes of one metaphase at once and read the karyotype.

A cell's crops are scored independently by the encoder; this module turns the scores into
calibrated log-probabilities and then assigns every crop jointly under each karyotype
hypothesis, so that two crops cannot both take the one free slot of a class.

- Per-crop log-probabilities: `log_softmax(scores / T)`, T fitted on validation crops by
  minimising the negative log-likelihood (`fit_temperature`).
- Size (optional, with each crop's chromosome area): the encoder sees every crop filling its
  frame, so it cannot tell a long chromosome from a short one; within one metaphase it can be
  told. A crop's relative size is log(area) - median log(area) of its cell (`relative_sizes`,
  free of the cell's condensation and the scanner's scale); a Gaussian per class, fitted on
  training cells (`fit_size_model`), gives log p(size | class), and the log-probabilities
  become `log_softmax(scores / T + size_weight * log p(size | class))`, with T and the weight
  fitted together on validation crops (`fit_size_weight`).
- Hypotheses (`hypotheses`): 46,XX and 46,XY; 47,XX,+n and 47,XY,+n for every autosome n;
  45,X; 47,XXY; 47,XXX; 47,XYY; 48,XXYY. Each is an expected count per class, i.e. a set of
  slots.
- Assignment (`assign`): minimum-cost matching of crops to slots
  (`scipy.optimize.linear_sum_assignment` on -log p). Up to `max_missing` slots may stay
  empty (a crop that was not cut out) at `missing_cost` each, and up to `max_extra` crops may
  be left over as debris at `extra_cost` each.
- Decision: hypothesis cost = assignment cost + penalty of its kind (0 for the normal
  karyotypes; fitted for `trisomy`, `sex_gain` and `monosomy_x` by `fit_penalty` on normal
  training cells and abnormalities simulated from them, together with the debris cost: a
  cheap debris slot lets 46,XX swallow the third 21 of a trisomy). The cheapest hypothesis
  wins.
- Homologues (optional, with the crops' embeddings): the crops of one class in one cell are
  homologues, and homologues of one metaphase look alike (same banding, same condensation).
  Each hypothesis' assignment earns `homologue_weight` x sum over crop pairs given the same
  class of (cosine - `homologue_threshold`), so a hypothesis that puts a look-alike of another
  class beside a class's homologues (the third 18 called a second Y: 47,XYY for 47,XY,+18)
  pays for it. The weight is fitted with the penalties and chosen on held-out cells (0 turns
  it off).

Counts alone cannot tell 45,X from a 46,XX or 46,XY cell whose missing crop is a sex
chromosome: the penalty of 45,X against `missing_cost` is the prior that decides it. Missing
crops are simulated from autosomes only, as in the G-band set, where every 45-crop normal
cell misses an autosome.

The pure functions work on score matrices; `karyotype_cell` and `karyotype_folder_of_cells`
add file handling and the encoder.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .atomic import atomic_path
from .errors import UserError
from .labels import CLASS_NAMES, NUM_CLASSES

if TYPE_CHECKING:
    from .datasets import Dataset
    from .model import Encoder
    from .splits import Split

X = CLASS_NAMES.index("X")
Y = CLASS_NAMES.index("Y")
N_AUTOSOMES = 22
MAX_CELL_IMAGES = 60  # more images than this in one folder cannot be one metaphase
KINDS: tuple[str, ...] = ("normal", "trisomy", "sex_gain", "monosomy_x")
PENALIZED_KINDS: tuple[str, ...] = KINDS[1:]
NORMAL_KARYOTYPES: tuple[str, ...] = ("46,XX", "46,XY")
PARAMS_FORMAT = "karyosearch-karyotype-params/1"
# Debris costs tried by fit_penalty: from "a spare crop is common" to "never seen".
EXTRA_COST_GRID: tuple[float, ...] = (3.0, 6.0, 10.0, 20.0)
# Homologue-likeness weights tried by fit_penalty (0: the term off).
HOMOLOGUE_WEIGHT_GRID: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0)


# --- hypotheses and ISCN strings ---------------------------------------------------------


def iscn(counts: Sequence[int] | np.ndarray) -> str:
    """ISCN-style karyotype of per-class counts (24 values): "47,XY,+21", "45,X", "47,XXY".

    Sex chromosomes are written out; autosomal gains and losses as +n / -n.
    """
    counts = np.asarray(counts, dtype=int)
    parts = [str(int(counts.sum())), "X" * counts[X] + "Y" * counts[Y] or "--"]
    for i in range(N_AUTOSOMES):
        delta = int(counts[i]) - 2
        parts += [f"+{i + 1}"] * max(delta, 0) + [f"-{i + 1}"] * max(-delta, 0)
    return ",".join(parts)


def normal_counts(sex: str) -> np.ndarray:
    """Expected crops per class of a karyotype with two of each autosome and `sex` ("XY")."""
    counts = np.full(NUM_CLASSES, 2, dtype=int)
    counts[X], counts[Y] = sex.count("X"), sex.count("Y")
    return counts


@dataclass(frozen=True)
class Hypothesis:
    """One karyotype the cell may have: its ISCN name, slots per class and kind."""

    name: str  # ISCN string, e.g. "47,XY,+21"
    counts: tuple[int, ...]  # expected chromosomes per class index 0..23
    kind: str  # one of KINDS

    @property
    def n_slots(self) -> int:
        return sum(self.counts)


@lru_cache(maxsize=2)
def hypotheses(include_xxyy: bool = True) -> tuple[Hypothesis, ...]:
    """The karyotypes considered, normal ones first (they win ties)."""

    def make(counts: np.ndarray, kind: str) -> Hypothesis:
        return Hypothesis(iscn(counts), tuple(int(c) for c in counts), kind)

    out = [make(normal_counts(sex), "normal") for sex in ("XX", "XY")]
    for sex in ("XX", "XY"):
        for n in range(N_AUTOSOMES):
            counts = normal_counts(sex)
            counts[n] += 1
            out.append(make(counts, "trisomy"))
    for sex in ("XXY", "XXX", "XYY") + (("XXYY",) if include_xxyy else ()):
        out.append(make(normal_counts(sex), "sex_gain"))
    out.append(make(normal_counts("X"), "monosomy_x"))
    return tuple(out)


def hypothesis_named(name: str, include_xxyy: bool = True) -> Hypothesis:
    """The hypothesis with ISCN name `name`, or ValueError."""
    for h in hypotheses(include_xxyy):
        if h.name == name:
            return h
    raise ValueError(f"no karyotype hypothesis {name!r}")


def is_normal(karyotype: str) -> bool:
    return karyotype in NORMAL_KARYOTYPES


# --- calibrated per-crop probabilities ---------------------------------------------------


def log_probs(scores: np.ndarray, temperature: float) -> np.ndarray:
    """Per-crop class log-probabilities log_softmax(scores / T), shape (N, classes)."""
    from scipy.special import log_softmax

    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return log_softmax(np.asarray(scores, dtype=np.float64) / temperature, axis=1)


def fit_temperature(
    scores: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    bounds: tuple[float, float] = (1e-4, 1e3),
) -> float:
    """The temperature T minimising the mean NLL of `labels` under log_softmax(scores / T).

    Fitted over log T (scipy `minimize_scalar`, bounded), on held-out validation crops.
    """
    from scipy.optimize import minimize_scalar

    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    if len(scores) == 0:
        raise ValueError("no scores to fit a temperature on")

    def nll(log_t: float) -> float:
        return float(
            -log_probs(scores, float(np.exp(log_t)))[np.arange(len(labels)), labels].mean()
        )

    res = minimize_scalar(
        nll,
        bounds=(np.log(bounds[0]), np.log(bounds[1])),
        method="bounded",
        options={"xatol": 1e-5},
    )
    return float(np.exp(res.x))


# --- relative size within the cell ------------------------------------------------------

MIN_SIZE_SD = 0.02  # floor of a class's spread of relative log size (a class seen in few cells)
# Fewer crops than this are too few for their median to stand for the cell's size scale.
MIN_CROPS_FOR_SIZE = 30


def relative_sizes(areas: Sequence[float] | np.ndarray) -> np.ndarray:
    """log(area) - median(log area) over the crops of one cell: each crop's size relative to
    its cell's, free of how condensed the metaphase was and of the scanner's scale."""
    logs = np.log(np.maximum(np.asarray(areas, dtype=np.float64), 1.0))
    return logs - np.median(logs) if len(logs) else logs


def fit_size_model(
    sizes: Sequence[np.ndarray], labels: Sequence[np.ndarray], robust: bool = False
) -> tuple[list[float], list[float]]:
    """Mean and standard deviation of relative size per class over training cells (each
    cell's `relative_sizes` and true labels); a class with no crop gets mean 0, sd 1.
    `robust`: median and 1.4826 x median absolute deviation instead, which a few mislabelled
    crops do not move (to audit the labels they are fitted on)."""
    s, y = np.concatenate(list(sizes)), np.concatenate(list(labels)).astype(int)
    mean, sd = np.zeros(NUM_CLASSES), np.ones(NUM_CLASSES)
    for c in range(NUM_CLASSES):
        v = s[y == c]
        if len(v) < 2:
            continue
        if robust:
            mean[c] = np.median(v)
            sd[c] = max(1.4826 * float(np.median(np.abs(v - mean[c]))), MIN_SIZE_SD)
        else:
            mean[c], sd[c] = v.mean(), max(v.std(), MIN_SIZE_SD)
    return mean.round(5).tolist(), sd.round(5).tolist()


def size_z(sizes: np.ndarray, mean: Sequence[float], sd: Sequence[float]) -> np.ndarray:
    """How far each crop's relative size is from each class's, in sd: shape (N, classes)."""
    return (np.asarray(sizes, float)[:, None] - np.asarray(mean, float)) / np.asarray(sd, float)


# A crop this many sd from its labelled class's relative size cannot be that class: its
# cell's labels contradict the images (labels shifted by one class, a fragment labelled as a
# chromosome). On gband612 any bound from 9 to 17 sd finds the same three cells.
LABEL_AUDIT_Z = 10.0
# A crop this many sd from every class's relative size is no chromosome (a speck, a stain
# blot, a sliver cut off another chromosome): it is left out of the assignment as debris,
# whatever its scores say. No crop of any of gband612's 612 cells but one (a speck of a few
# pixels, 24-25 sd from its nearest class) is more than 5.0 sd from every class.
DEBRIS_Z = LABEL_AUDIT_Z


def debris_crops(z: np.ndarray) -> np.ndarray:
    """Mask of a cell's crops more than DEBRIS_Z sd from every class's relative size, from
    their `size_z` (N, classes)."""
    return np.abs(z).min(axis=1) > DEBRIS_Z


def labels_contradicted(
    sizes: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    mean: Sequence[float],
    sd: Sequence[float],
    max_z: float = LABEL_AUDIT_Z,
) -> np.ndarray:
    """Rows of one cell's crops whose relative size is more than `max_z` sd from their
    labelled class's (a label audit from sizes alone: no encoder involved)."""
    labels = np.asarray(labels, int)
    z = size_z(sizes, mean, sd)[np.arange(len(labels)), labels]
    return np.flatnonzero(np.abs(z) > max_z)


def contradicted_crops(
    sizes: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    paths: Sequence[str],
    mean: Sequence[float],
    sd: Sequence[float],
) -> list[dict[str, Any]]:
    """`labels_contradicted` as records, for a report: each crop at fault with its path, its
    label and how far its size is from its label's, in sd ([] for a cell whose labels hold)."""
    labels = np.asarray(labels, int)
    rows = labels_contradicted(sizes, labels, mean, sd)
    if not len(rows):
        return []
    z = size_z(sizes, mean, sd)
    return [
        {
            "path": str(paths[i]),
            "label": CLASS_NAMES[labels[i]],
            "z": round(float(z[i, labels[i]]), 2),
        }
        for i in rows
    ]


def size_log_likelihood(
    sizes: np.ndarray, mean: Sequence[float], sd: Sequence[float]
) -> np.ndarray:
    """log N(size; mean_c, sd_c) per crop and class, up to a constant: shape (N, classes)."""
    return -0.5 * size_z(sizes, mean, sd) ** 2 - np.log(np.asarray(sd, float))


def cell_log_probs(
    scores: np.ndarray, params: KaryotypeParams, sizes: np.ndarray | None = None
) -> np.ndarray:
    """A cell's per-crop class log-probabilities: `log_probs`, with the size term added when
    `params` has a size model and weight and the crops' `relative_sizes` are given."""
    temperature = params.temperature or 1.0
    if sizes is None or not params.size_weight or params.size_mean is None or not params.size_sd:
        return log_probs(scores, temperature)
    from scipy.special import log_softmax

    ll = size_log_likelihood(sizes, params.size_mean, params.size_sd)
    return log_softmax(np.asarray(scores, np.float64) / temperature + params.size_weight * ll, 1)


def fit_size_weight(
    scores: np.ndarray,
    sizes: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    params: KaryotypeParams,
    max_weight: float = 4.0,
) -> KaryotypeParams:
    """T and `size_weight` minimising the NLL of `labels` under `cell_log_probs`, fitted
    together (scipy L-BFGS-B over log T and the weight in [0, max_weight]) on validation
    crops with their relative sizes; `params` must hold the size model."""
    from scipy.optimize import minimize

    if params.size_mean is None:
        raise ValueError("fit_size_model first: params hold no size model")
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, int)
    rows = np.arange(len(labels))

    def nll(x: np.ndarray) -> float:
        trial = replace(params, temperature=float(np.exp(x[0])), size_weight=float(x[1]))
        return float(-cell_log_probs(scores, trial, sizes)[rows, labels].mean())

    start = np.array([np.log(params.temperature or fit_temperature(scores, labels)), 0.5])
    res = minimize(
        nll, start, method="L-BFGS-B", bounds=[(np.log(1e-4), np.log(1e3)), (0, max_weight)]
    )
    return replace(params, temperature=float(np.exp(res.x[0])), size_weight=float(res.x[1]))


# --- parameters --------------------------------------------------------------------------


def _default_penalties() -> dict[str, float]:
    return {"trisomy": 4.0, "sex_gain": 4.0, "monosomy_x": 1.5}


@dataclass
class KaryotypeParams:
    """Everything the karyotype decision depends on (saved as <model>.karyotype.json)."""

    temperature: float | None = None  # T of log_softmax(scores / T); None: the encoder's own
    penalties: dict[str, float] = field(
        default_factory=_default_penalties
    )  # cost per abnormal kind
    missing_cost: float = 3.0  # cost of one empty slot (a chromosome not cut out), ~ -log P
    max_missing: int = 2  # at most this many more slots than crops
    extra_cost: float = 6.0  # cost of one crop left over as debris
    max_extra: int = 1  # at most this many crops left over
    review_margin: float = 0.4  # review a crop whose top-2 probability margin is below this
    review_size_z: float = 3.0  # review a crop this many sd off its class's relative size
    include_xxyy: bool = True  # consider 48,XXYY
    homologue_weight: float = 0.0  # weight of the homologue likeness term (0: off)
    homologue_threshold: float = 0.5  # embedding cosine of a same-class pair that is neutral
    size_weight: float = 0.0  # weight of log p(relative size | class) (0: size not used)
    size_mean: list[float] | None = None  # per class mean relative log size (fit_size_model)
    size_sd: list[float] | None = None  # per class standard deviation of it
    fitted: dict[str, Any] = field(default_factory=dict)  # how the values were fitted, and on what

    def __post_init__(self) -> None:
        unknown = set(self.penalties) - set(PENALIZED_KINDS)
        if unknown:
            raise ValueError(
                f"unknown penalty kind(s) {sorted(unknown)}; use {list(PENALIZED_KINDS)}"
            )
        self.penalties = {
            **_default_penalties(),
            **{k: float(v) for k, v in self.penalties.items()},
        }
        if self.temperature is not None and not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.max_missing < 0 or self.max_extra < 0:
            raise ValueError("max_missing and max_extra must be >= 0")

    def penalty(self, kind: str) -> float:
        return 0.0 if kind == "normal" else self.penalties[kind]

    def with_temperature(self, temperature: float) -> KaryotypeParams:
        """These params with T filled in where it is still None."""
        return (
            self if self.temperature is not None else replace(self, temperature=float(temperature))
        )

    def to_json(self) -> dict[str, Any]:
        return {"format": PARAMS_FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> KaryotypeParams:
        raw = {k: v for k, v in raw.items() if k != "format"}
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in raw.items() if k in known})


def params_path(model_path: str | os.PathLike) -> Path:
    """Where the karyotype parameters of a checkpoint live: m.pt -> m.karyotype.json."""
    return Path(model_path).with_suffix(".karyotype.json")


def save_params(params: KaryotypeParams, path: str | os.PathLike) -> Path:
    """Write params as JSON atomically (temporary file, then rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(params.to_json(), indent=2) + "\n", encoding="utf-8")
    return Path(path)


def load_params(path: str | os.PathLike) -> KaryotypeParams:
    """Read params written by `save_params`, or raise UserError saying why not."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict) or raw.get("format") != PARAMS_FORMAT:
            raise ValueError(f"not {PARAMS_FORMAT}")
        return KaryotypeParams.from_json(raw)
    except FileNotFoundError:
        raise UserError(f"{path}: no such karyotype parameter file") from None
    except (OSError, ValueError, TypeError) as err:
        raise UserError(f"{path}: not a karyotype parameter file ({err})") from None


def resolve_params(
    model_path: str | os.PathLike | None, params_file: str | os.PathLike | None = None
) -> KaryotypeParams:
    """`params_file` if given, else the file beside the model if present, else defaults."""
    if params_file is not None:
        return load_params(params_file)
    if model_path is not None and params_path(model_path).is_file():
        return load_params(params_path(model_path))
    return KaryotypeParams()


# --- joint assignment --------------------------------------------------------------------


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


# --- the report of one cell --------------------------------------------------------------


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
    embeddings: np.ndarray | None = field(default=None, repr=False)  # (N, 2048); not in the JSON

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
) -> CellKaryotype:
    """The karyotype of one cell from its crops' class scores (N, 24) (pure; no files read).

    `params.temperature` None means the scores are already logits (T = 1). `embeddings`
    (N, D), the crops' unit embeddings, let the hypotheses be weighed for homologue likeness
    (`params.homologue_weight`); `sizes` (N,), the crops' `relative_sizes` in this cell, add
    how long each chromosome is (`params.size_weight`; ignored for a cell of fewer than
    MIN_CROPS_FOR_SIZE crops); with a size model, a crop of no chromosome's size
    (`debris_crops`) is left out of the assignment as debris.
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
    logp = cell_log_probs(scores, params, sizes)
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


# --- true karyotypes and the split that holds abnormal patients out ----------------------


def true_karyotype(labels: Sequence[int] | np.ndarray, max_missing: int = 2) -> str | None:
    """A labelled cell's karyotype read from its crop labels, or None if it cannot be read.

    Rule (the G-band set has no autosomal monosomy and its 45-crop normal cells each miss one
    autosome crop): the sex chromosomes are counted as they are (1 X and no Y is 45,X, as the
    data README says of its four such cells); an autosome with 3 crops is a trisomy; an
    autosome with fewer than 2 crops is a crop that was not cut out. A cell with no sex
    chromosome crop or more than `max_missing` missing autosome crops (the 36-image cell)
    has no readable karyotype.
    """
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=NUM_CLASSES)
    if counts[X] + counts[Y] == 0:
        return None
    auto = counts[:N_AUTOSOMES]
    if np.maximum(2 - auto, 0).sum() > max_missing:
        return None
    full = counts.copy()
    full[:N_AUTOSOMES] = np.maximum(auto, 2)
    return iscn(full)


def cell_karyotypes(dataset: Dataset) -> dict[str, str | None]:
    """True karyotype (see `true_karyotype`) of every cell of a labelled dataset."""
    by_cell: dict[str, list[int]] = {}
    for it in dataset.items:
        by_cell.setdefault(it.cell_id or it.path, []).append(it.label)
    return {cell: true_karyotype(labels) for cell, labels in by_cell.items()}


def abnormal_patient_split(
    dataset: Dataset, seed: int = 0, test_share: float = 0.15, val_share: float = 0.07
) -> Split:
    """The `karyo` split: every patient with an abnormal cell is on the test side.

    Groups are patients (else cells). A patient is abnormal when any of its cells has a
    readable karyotype (`true_karyotype`) other than 46,XX / 46,XY. All abnormal patients go
    to test; of the other patients, in a seeded random order, `test_share` go to test too,
    then `val_share` to validation, and the rest to training. No patient straddles two sides,
    so an encoder trained on `train` never saw a test patient.
    """
    from .splits import Split

    karyos = cell_karyotypes(dataset)
    groups = np.asarray(dataset.groups(), dtype=object).astype(str)
    cells = [it.cell_id or it.path for it in dataset.items]
    abnormal = {
        g
        for g, c in zip(groups, cells, strict=True)
        if karyos[c] is not None and not is_normal(karyos[c])
    }
    others = sorted(set(groups) - abnormal)
    order = [others[i] for i in np.random.default_rng(seed).permutation(len(others))]
    n_test = round(test_share * len(others))
    n_val = round(val_share * len(others))
    side = {g: 2 for g in abnormal}
    side.update({g: 2 for g in order[:n_test]})
    side.update({g: 1 for g in order[n_test : n_test + n_val]})
    side.update({g: 0 for g in order[n_test + n_val :]})
    return Split.from_sides("karyo", seed, np.array([side[g] for g in groups], dtype=np.int8))


# --- penalty fitting on simulated abnormal cells -----------------------------------------


@dataclass
class LabelledCell:
    """Class scores of one cell's crops with their true labels and true karyotype."""

    scores: np.ndarray  # (N, classes) encoder scores (not yet divided by T)
    labels: np.ndarray  # (N,) true class index per crop
    karyotype: str  # true ISCN karyotype
    cell_id: str = ""
    embeddings: np.ndarray | None = None  # (N, D) unit embeddings, for homologue likeness
    sizes: np.ndarray | None = None  # (N,) relative sizes within the crop's own source cell

    def without(self, row: int, karyotype: str | None, tag: str) -> LabelledCell:
        """The cell with crop `row` removed (`karyotype` None: the same karyotype)."""
        keep = np.ones(len(self.labels), bool)
        keep[row] = False
        return LabelledCell(
            self.scores[keep],
            self.labels[keep],
            self.karyotype if karyotype is None else karyotype,
            self.cell_id + tag,
            None if self.embeddings is None else self.embeddings[keep],
            None if self.sizes is None else self.sizes[keep],
        )

    def plus(self, donor: LabelledCell, row: int, karyotype: str, tag: str) -> LabelledCell:
        """The cell with crop `row` of `donor` added."""
        return LabelledCell(
            np.vstack([self.scores, donor.scores[row][None]]),
            np.append(self.labels, donor.labels[row]),
            karyotype,
            self.cell_id + tag,
            None
            if self.embeddings is None or donor.embeddings is None
            else np.vstack([self.embeddings, donor.embeddings[row][None]]),
            # the donor crop keeps its size relative to its own cell, as a crop of this cell
            # would have it relative to this one
            None
            if self.sizes is None or donor.sizes is None
            else np.append(self.sizes, donor.sizes[row]),
        )

    @cached_property
    def similarity(self) -> np.ndarray | None:
        """crop_similarity of the embeddings (None without), computed once."""
        return None if self.embeddings is None else crop_similarity(self.embeddings)


def simulate_cells(
    normal: Sequence[LabelledCell], seed: int = 0, missing_share: float = 0.2
) -> tuple[list[LabelledCell], list[LabelledCell]]:
    """Normal and abnormal cells made from normal (training) cells, by moving crop rows.

    Per normal cell: itself and a copy missing one random autosome crop (normal); a trisomy
    of a random autosome and a gain of X or Y (a crop of that class from another cell added);
    45,X (the Y, or one X, removed). A `missing_share` of the abnormal ones also miss one
    random autosome crop (not of the gained class), as some real abnormal cells do.
    """
    rng = np.random.default_rng(seed)
    base = [c for c in normal if is_normal(c.karyotype)]
    by_class: dict[int, list[tuple[int, int]]] = {}
    for ci, c in enumerate(base):
        for ri, lab in enumerate(c.labels):
            by_class.setdefault(int(lab), []).append((ci, ri))

    def donor(cls: int, not_cell: int) -> tuple[int, int] | None:
        pool = [p for p in by_class.get(cls, []) if p[0] != not_cell]
        return pool[rng.integers(len(pool))] if pool else None

    def random_autosome_row(c: LabelledCell, labels: np.ndarray, avoid: int = -1) -> int | None:
        rows = np.flatnonzero((labels < N_AUTOSOMES) & (labels != avoid))
        return int(rows[rng.integers(len(rows))]) if len(rows) else None

    normals: list[LabelledCell] = []
    abnormals: list[LabelledCell] = []
    for ci, c in enumerate(base):
        counts = np.asarray(hypothesis_named(c.karyotype).counts)
        normals.append(c)
        r = random_autosome_row(c, c.labels)
        if r is not None:
            normals.append(c.without(r, None, "-miss"))
        sims: list[LabelledCell] = []
        n = int(rng.integers(N_AUTOSOMES))
        found = donor(n, ci)
        if found is not None:
            gained = iscn(counts + np.eye(NUM_CLASSES, dtype=int)[n])
            sims.append(c.plus(base[found[0]], found[1], gained, f"+{n + 1}"))
        gain = X if rng.random() < 0.5 else Y
        found = donor(gain, ci)
        if found is not None:
            gained = iscn(counts + np.eye(NUM_CLASSES, dtype=int)[gain])
            sims.append(c.plus(base[found[0]], found[1], gained, f"+{CLASS_NAMES[gain]}"))
        lose = Y if counts[Y] else X
        rows = np.flatnonzero(c.labels == lose)
        if len(rows):
            sims.append(c.without(int(rows[0]), iscn(normal_counts("X")), f"-{CLASS_NAMES[lose]}"))
        for s in sims:
            if rng.random() < missing_share:
                gained = [k for k in range(N_AUTOSOMES) if Counter(s.labels.tolist())[k] > 2]
                r = random_autosome_row(s, s.labels, gained[0] if gained else -1)
                if r is not None:
                    s = s.without(r, None, "-miss")
            abnormals.append(s)
    return normals, abnormals


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


# --- files: one cell folder, or a folder of cells ----------------------------------------


@dataclass
class CellFiles:
    """The files of one cell folder: chromosome images, and other files (reported, not used)."""

    folder: Path
    images: list[Path]
    others: list[Path]


def collect_cell(folder: str | os.PathLike, max_images: int = MAX_CELL_IMAGES) -> CellFiles:
    """The images under `folder` (recursively; hidden files ignored), checked to be one cell.

    UserError when the folder is missing, holds no image, or more than `max_images` images.
    """
    from .image import is_image_path

    folder = Path(folder)
    if not folder.exists():
        raise UserError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise UserError(f"{folder}: a cell is a folder of chromosome crops, not a file")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if is_image_path(p)]
    others = [p for p in files if not is_image_path(p)]
    if not files:
        raise UserError(f"{folder}: the folder is empty; expected one cell's chromosome crops")
    if not images:
        raise UserError(
            f"{folder}: no chromosome images among its {len(others)} files "
            f"(e.g. {others[0].name}); expected .png, .bmp, .tif or .jpg crops"
        )
    if len(images) > max_images:
        raise UserError(
            f"{folder}: {len(images)} images are too many for one cell (at most "
            f"{max_images}); for a folder of cell folders use --batch"
        )
    return CellFiles(folder, images, others)


def _skipped(others: Sequence[Path], errors: Sequence[Any]) -> list[dict[str, str]]:
    out = [{"path": str(p), "reason": "not an image file"} for p in others]
    return out + [{"path": e.path, "reason": e.reason} for e in errors]


def karyotype_cell(
    encoder: Encoder,
    paths: Sequence[str | os.PathLike],
    params: KaryotypeParams,
    fast: bool = True,
    cell: str | None = None,
) -> CellKaryotype:
    """The karyotype of one cell from its crop image files.

    Unreadable images are skipped and reported in `skipped`; UserError when none is left or
    there are more than MAX_CELL_IMAGES. Params with no temperature use the encoder's.
    """
    from .inference import embed_files

    if not paths:
        raise UserError("a cell needs at least one chromosome crop")
    if len(paths) > MAX_CELL_IMAGES:
        raise UserError(
            f"{len(paths)} images are too many for one cell (at most {MAX_CELL_IMAGES})"
        )
    emb = embed_files(encoder, list(paths), fast=fast)
    if not emb.paths:
        raise UserError(f"none of the {len(paths)} images could be read ({emb.errors[0]})")
    result = karyotype_scores(
        emb.scores,
        emb.paths,
        params.with_temperature(encoder.score_temperature),
        cell=cell,
        embeddings=emb.embeddings,
        sizes=relative_sizes(emb.areas),
    )
    result.skipped = _skipped([], emb.errors)
    result.embeddings = emb.embeddings
    return result


def karyotype_folder(
    encoder: Encoder, folder: str | os.PathLike, params: KaryotypeParams, fast: bool = True
) -> CellKaryotype:
    """`karyotype_cell` on the images of one cell folder; other files are reported, not fatal."""
    files = collect_cell(folder)
    result = karyotype_cell(encoder, files.images, params, fast, cell=str(files.folder))
    result.skipped = _skipped(files.others, []) + result.skipped
    return result


def attach_neighbours(
    result: CellKaryotype, search: Any, k: int = 4, all_crops: bool = False
) -> None:
    """Give the review crops (or all) their k most similar archived crops, to compare bands.

    `search` is an opened `engine.SearchIndex` built with the same encoder; a crop's own file,
    if archived, is not its own neighbour.
    """
    if result.embeddings is None:
        raise ValueError("the result holds no embeddings (karyotype_cell keeps them)")
    rows = [i for i, c in enumerate(result.crops) if all_crops or c.reasons]
    if not rows:
        return
    found = search.query_vectors(
        result.embeddings[rows], k + 1, queries=[result.crops[i].path for i in rows]
    )
    for i, r in zip(rows, found, strict=True):
        crop = result.crops[i]
        own = os.path.realpath(crop.path)
        near = [n for n in r.neighbours if os.path.realpath(n.path) != own][:k]
        crop.neighbours = [
            {
                "rank": j + 1,
                "score": round(float(n.score), 4),
                "label": n.label,
                "path": n.path,
                "cell_id": n.cell_id,
            }
            for j, n in enumerate(near)
        ]
        labels = Counter(n.label for n in near if n.label is not None)
        crop.knn_label = labels.most_common(1)[0][0] if labels else None


def find_cell_folders(root: str | os.PathLike, max_images: int = MAX_CELL_IMAGES) -> list[Path]:
    """The cell folders under `root`: subfolders holding 1..max_images images (recursively).

    A subfolder with more images is taken as a folder of cells and searched in turn, so
    `gband612/` and `gband612/single_clase/` both give the 612 cell folders.
    """
    from .image import is_image_path

    def n_images(folder: Path) -> int:
        return sum(
            1
            for p in folder.rglob("*")
            if p.is_file() and is_image_path(p) and not p.name.startswith(".")
        )

    cells: list[Path] = []

    def visit(folder: Path) -> None:
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            n = n_images(sub)
            if 0 < n <= max_images:
                cells.append(sub)
            elif n > max_images:
                visit(sub)

    visit(Path(root))
    return cells


@dataclass
class BatchKaryotype:
    """Karyotypes of the cells of a folder of cell folders."""

    root: str
    cells: list[CellKaryotype]
    errors: list[dict[str, str]]  # {"cell", "reason"} for cells that gave no karyotype

    def to_json(self) -> dict[str, Any]:
        calls = Counter(c.karyotype for c in self.cells)
        return {
            "root": self.root,
            "n_cells": len(self.cells),
            "karyotypes": dict(calls.most_common()),
            "cells": [c.to_json() for c in self.cells],
            "errors": self.errors,
        }


def karyotype_folder_of_cells(
    encoder: Encoder,
    root: str | os.PathLike,
    params: KaryotypeParams,
    fast: bool = True,
    batch_size: int = 128,
    progress: Callable[[int], None] | None = None,
    folders: Sequence[Path] | None = None,
) -> BatchKaryotype:
    """Karyotype every cell folder under `root` (`folders`, else `find_cell_folders(root)`),
    embedding all crops in shared batches. A cell that fails is reported in `errors`."""
    from .inference import embed_files

    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder")
    folders = find_cell_folders(root) if folders is None else list(folders)
    if not folders:
        raise UserError(f"{root}: no cell folders with chromosome images found")
    files = [collect_cell(f) for f in folders]
    paths = [p for f in files for p in f.images]
    emb = embed_files(encoder, paths, batch_size=batch_size, fast=fast, progress=progress)
    row = {p: i for i, p in enumerate(emb.paths)}
    err_by_path = {e.path: e for e in emb.errors}
    params = params.with_temperature(encoder.score_temperature)
    cells, errors = [], []
    for f in files:
        rows = [row[str(p)] for p in f.images if str(p) in row]
        if not rows:
            errors.append({"cell": str(f.folder), "reason": "none of its images could be read"})
            continue
        result = karyotype_scores(
            emb.scores[rows],
            [emb.paths[i] for i in rows],
            params,
            cell=str(f.folder),
            embeddings=emb.embeddings[rows],
            sizes=relative_sizes(emb.areas[rows]),
        )
        result.embeddings = emb.embeddings[rows]
        result.skipped = _skipped(
            f.others, [err_by_path[str(p)] for p in f.images if str(p) in err_by_path]
        )
        cells.append(result)
    return BatchKaryotype(str(root), cells, errors)
