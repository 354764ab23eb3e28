"""Whole-cell karyotyping on held-out cells: does the joint assignment help, and are
abnormal karyotypes found?

Protocol (nothing is fitted on test cells):

- Split. G-band (and any set with abnormal cells): the `karyo` split
  (`data.splits.abnormal_patient_split`): every patient with an abnormal cell is on the test side,
  plus a seeded random share of the other patients; grouped by patient, so the encoder (trained
  on the same split and seed) never saw a test patient. BioImLab (all normal): the `cell`
  split's test side. A cell's true karyotype is read from its crop labels
  (`cytogenetics.true_karyotype`): the sex chromosomes as counted, an autosome with 3 crops a
  trisomy, an autosome with fewer than 2 crops a crop not cut out; cells with no sex
  chromosome or more than 2 missing crops (the 36-image G-band cell) are left out of the
  karyotype metrics.
- Size: each crop's chromosome area relative to its cell's (`sizes.relative_sizes`); the
  per-class size model is fitted on the training cells, and the temperature and size weight
  together on the validation crops (NLL; `fit_size_weight`). --no-size leaves size out.
- Temperature: fitted on the validation crops (NLL).
- Penalties: fitted on training cells with simulated abnormalities (`simulate_cells`,
  `fit_penalty`), false-positive rate at most --max-fpr on the simulated normal cells and
  on the normal validation cells (--fpr-cells val: an encoder is surer of its training cells
  than of new ones, so their FPR alone flatters). The debris cost and the homologue weight
  (--homologue-weights) are chosen by balanced accuracy on the validation cells and
  abnormalities simulated from them, for the same reason.
- Test: per-chromosome (crop) accuracy of the independent argmax and of the joint assignment,
  the share of crop errors the assignment removes, the exact-karyotype rate (also of a
  karyotype read from the argmax counts, for comparison), sensitivity / specificity of the
  abnormality call, the confusion of karyotype calls, and how many wrong crops the review
  list catches.
- Label audit: a test cell with a crop more than 10 sd from its labelled class's relative size
  (`sizes.labels_contradicted`; the training cells' size model and the labels alone, no
  encoder) has labels that contradict its images. Such cells are listed with the crops at
  fault, and the metrics are given again without them (`label_audit` in the JSON); the
  headline metrics keep every cell.

    .venv/bin/python benchmarks/bench_karyotype.py --model runs/m.pt --data ../shared/data/gband612
    .venv/bin/python benchmarks/bench_karyotype.py --model runs/b.pt --data ../shared/data/bioimlab

Steps 1 and 2 (temperature, size, penalties) are the library's fit,
`karyosearch.karyotype.fit.fit_karyotype`, the same as `karyosearch karyotype fit`; this script
adds the test. The fitted parameters go to --params-out (default: <model>.karyotype.json, which
`karyosearch karyotype` then picks up); the results to
benchmarks/results/karyotype_<dataset>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from karyosearch.cytogenetics import NORMAL_KARYOTYPES, is_normal, true_karyotype
from karyosearch.data.datasets import Dataset, read_dataset
from karyosearch.karyotype.calibrate import cell_log_probs
from karyosearch.karyotype.fit import CellRows, fit_karyotype
from karyosearch.karyotype.params import KaryotypeParams, params_path, save_params
from karyosearch.karyotype.penalty import HOMOLOGUE_WEIGHT_GRID
from karyosearch.karyotype.report import karyotype_scores
from karyosearch.karyotype.simulate import LabelledCell
from karyosearch.labels import CLASS_NAMES
from karyosearch.model.embed import EmbeddedFiles
from karyosearch.sizes import LABEL_AUDIT_Z, contradicted_crops, relative_sizes
from karyosearch.util.atomic import atomic_path
from karyosearch.util.runtime import describe, timestamp

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="encoder checkpoint (.pt)")
    parser.add_argument("--data", type=Path, required=True, help="labelled dataset folder")
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="split seed (default: the model's training seed, else 0)",
    )
    parser.add_argument(
        "--split",
        choices=("auto", "karyo", "cell"),
        default="auto",
        help="auto: cell for BioImLab, karyo otherwise",
    )
    parser.add_argument(
        "--params-out",
        type=Path,
        default=None,
        help="where to save the fitted params (default <model>.karyotype.json)",
    )
    parser.add_argument(
        "--json-out",
        type=Path,
        default=None,
        help="default benchmarks/results/karyotype_<dataset>.json",
    )
    parser.add_argument(
        "--penalty-cells",
        choices=("train", "val", "train+val"),
        default="train",
        help="cells the penalties are fitted on (simulated abnormalities)",
    )
    parser.add_argument(
        "--fpr-cells",
        choices=("val", "none"),
        default="val",
        help="val: the penalties must also keep the FPR bound on the normal validation cells "
        "(and copies missing a crop), and the debris cost and homologue weight are chosen on "
        "them and abnormalities simulated from them; none: training cells only",
    )
    parser.add_argument(
        "--max-fpr",
        type=float,
        default=0.01,
        help="false-positive bound on simulated normal cells for the penalty fit",
    )
    parser.add_argument(
        "--homologue-weights",
        type=_weights,
        default=list(HOMOLOGUE_WEIGHT_GRID),
        help="homologue-likeness weights the fit tries, comma-separated (0: the term off)",
    )
    parser.add_argument(
        "--no-size",
        action="store_true",
        help="leave the crops' sizes within their cells out (the ablation)",
    )
    parser.add_argument(
        "--limit-cells",
        type=int,
        default=0,
        help="at most this many cells per split side (0: all; for smoke runs)",
    )
    parser.add_argument(
        "--scores-out",
        type=Path,
        default=None,
        help="also save every embedded crop's scores, embedding (float16), label, cell and "
        "split side as .npz, to study the assignment without embedding again",
    )
    parser.add_argument(
        "--scores-in",
        type=Path,
        default=None,
        help="read the crops' scores from a --scores-out file instead of embedding them",
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes of the assignment")
    return parser.parse_args(argv)


def _weights(text: str) -> list[float]:
    """'0,1,4' -> [0.0, 1.0, 4.0] (argparse reports a bad list in one line)."""
    try:
        return [float(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers, comma-separated: {text!r}") from None


def crop_metrics(
    labels: np.ndarray, argmax: np.ndarray, joint: np.ndarray, argmax_sized: np.ndarray
) -> dict[str, Any]:
    """Per-chromosome accuracy of the encoder alone (argmax), of each crop with its size in
    the cell (argmax_sized; the same as argmax without a size model) and of the joint
    assignment (-1 = debris, counted wrong), and the share of the encoder's errors each removes."""
    err_ind = int((argmax != labels).sum())
    err_sized = int((argmax_sized != labels).sum())
    err_joint = int((joint != labels).sum())
    per_class = {}
    for k, name in enumerate(CLASS_NAMES):
        m = labels == k
        if m.any():
            per_class[name] = {
                "n": int(m.sum()),
                "independent": float((argmax[m] == k).mean()),
                "joint": float((joint[m] == k).mean()),
            }
    return {
        "n_crops": int(len(labels)),
        "accuracy_independent": float(1 - err_ind / max(len(labels), 1)),
        "accuracy_with_size": float(1 - err_sized / max(len(labels), 1)),
        "accuracy_joint": float(1 - err_joint / max(len(labels), 1)),
        "errors_independent": err_ind,
        "errors_with_size": err_sized,
        "errors_joint": err_joint,
        "errors_removed": float((err_ind - err_joint) / err_ind) if err_ind else 0.0,
        "errors_removed_by_size": float((err_ind - err_sized) / err_ind) if err_ind else 0.0,
        "per_class": per_class,
    }


def rate_with_interval(k: int, n: int) -> dict[str, Any]:
    """k of n, its rate, and the exact (Clopper-Pearson) 95% interval of the rate: with 100
    cells a rate of 4% may be anything from 1% to 10%."""
    from scipy.stats import binomtest

    if n == 0:
        return {"k": k, "n": n, "rate": None, "ci95": None}
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    return {"k": k, "n": n, "rate": k / n, "ci95": [float(ci.low), float(ci.high)]}


def evaluate_cells(
    cells: Sequence[LabelledCell],
    paths: Sequence[Sequence[str]],
    params: KaryotypeParams,
    repeats: int = 1,
) -> dict[str, Any]:
    """Karyotype every test cell and score the calls against the truth."""
    results, times = [], []
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        results = [
            karyotype_scores(c.scores, p, params, embeddings=c.embeddings, sizes=c.sizes)
            for c, p in zip(cells, paths, strict=True)
        ]
        times.append((time.perf_counter() - start) / max(len(cells), 1))
    labels = np.concatenate([c.labels for c in cells])
    argmax = np.concatenate([c.scores.argmax(1) for c in cells])
    argmax_sized = np.concatenate(
        [cell_log_probs(c.scores, params, c.sizes).argmax(1) for c in cells]
    )
    joint = np.concatenate(
        [[CLASS_NAMES.index(cr.label) if not cr.extra else -1 for cr in r.crops] for r in results]
    )
    truth = [c.karyotype for c in cells]
    calls = [r.karyotype for r in results]
    argmax_calls = [true_karyotype(c.scores.argmax(1)) or "unreadable" for c in cells]
    normal = np.array([is_normal(t) for t in truth])
    called_abnormal = np.array([not is_normal(k) for k in calls])
    exact = np.array([t == k for t, k in zip(truth, calls, strict=True)])
    confusion: dict[str, Counter] = defaultdict(Counter)
    for t, k in zip(truth, calls, strict=True):
        confusion[t][k] += 1
    by_truth = {}
    for t in sorted(set(truth), key=lambda s: (s not in NORMAL_KARYOTYPES, s)):
        m = np.array([x == t for x in truth])
        by_truth[t] = {
            "n": int(m.sum()),
            "exact": float(exact[m].mean()),
            "called_abnormal": float(called_abnormal[m].mean()),
        }
    n_crops = np.array([len(c.labels) for c in cells])
    short = normal & (n_crops < 46)
    # the review list: how many of the crops the assignment got wrong does it hold?
    wrong_reviewed = wrong = reviewed = 0
    for c, r in zip(cells, results, strict=True):
        for lab, cr in zip(c.labels, r.crops, strict=True):
            bad = cr.extra or CLASS_NAMES.index(cr.label) != lab
            wrong += bad
            reviewed += bool(cr.reasons)
            wrong_reviewed += bad and bool(cr.reasons)
    return {
        "n_cells": len(cells),
        "n_normal": int(normal.sum()),
        "n_abnormal": int((~normal).sum()),
        "crops": crop_metrics(labels, argmax, joint, argmax_sized),
        "exact_karyotype_rate": float(exact.mean()) if len(cells) else None,
        "exact_karyotype_rate_argmax_counts": float(
            np.mean([t == k for t, k in zip(truth, argmax_calls, strict=True)])
        )
        if len(cells)
        else None,
        "specificity": float((~called_abnormal[normal]).mean()) if normal.any() else None,
        "normal_called_abnormal": rate_with_interval(
            int(called_abnormal[normal].sum()), int(normal.sum())
        ),
        "sensitivity": float(called_abnormal[~normal].mean()) if (~normal).any() else None,
        "exact_rate_abnormal": float(exact[~normal].mean()) if (~normal).any() else None,
        "normal_cells_with_a_missing_crop": {
            "n": int(short.sum()),
            "called_normal": float((~called_abnormal[short]).mean()) if short.any() else None,
        },
        "by_true_karyotype": by_truth,
        "confusion": {t: dict(c.most_common()) for t, c in confusion.items()},
        "review": {
            "crops_per_cell": float(reviewed / max(len(cells), 1)),
            "wrong_crops_reviewed": float(wrong_reviewed / wrong) if wrong else None,
            "wrong_crops": int(wrong),
        },
        "seconds_per_cell_median": statistics.median(times) if times else None,
        "cells": [
            {
                "cell": c.cell_id,
                "true": t,
                "called": k,
                "n_crops": int(len(c.labels)),
                "review": len(r.review),
                "runner_up": r.hypotheses[1]["karyotype"] if len(r.hypotheses) > 1 else None,
            }
            for c, r, t, k in zip(cells, results, truth, calls, strict=True)
        ],
    }


def audit_test_cells(
    test: Sequence[tuple[LabelledCell, list[str]]],
    emb: EmbeddedFiles,
    row_of: dict[str, int],
    mean: Sequence[float],
    sd: Sequence[float],
) -> list[dict[str, Any]]:
    """Test cells whose labels their crops' sizes contradict (`contradicted_crops`), with
    the crops at fault and how far off they are; against the training cells' size model
    (`data inspect` audits a whole dataset with `datasets.audit_labels`)."""
    out = []
    for lc, paths in test:
        sizes = relative_sizes(emb.areas[[row_of[p] for p in paths]])
        if crops := contradicted_crops(sizes, lc.labels, paths, mean, sd):
            out.append({"cell": lc.cell_id, "true": lc.karyotype, "crops": crops})
    return out


def save_scores(
    path: Path, emb: EmbeddedFiles, dataset: Dataset, cells: Sequence[CellRows], fingerprint: str
) -> None:
    """The embedded crops, row-aligned: scores, float16 embeddings, labels, cells, sides,
    and the fingerprint of the encoder that made them."""
    index = {it.path: i for i, it in enumerate(dataset.items)}
    where = {i: c for c in cells for i in c.rows}
    rows = [where[index[p]] for p in emb.paths]
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            scores=emb.scores.astype(np.float32),
            embeddings=emb.embeddings.astype(np.float16),
            labels=np.asarray([dataset.items[index[p]].label for p in emb.paths]),
            cell=np.asarray([c.cell_id for c in rows]),
            side=np.asarray([c.side for c in rows]),
            path=np.asarray(emb.paths),
            fingerprint=np.asarray(fingerprint),
            areas=emb.areas.astype(np.float32),
        )


def load_scores(path: Path, fingerprint: str, paths: set[str]) -> EmbeddedFiles:
    """Crops saved by `save_scores` in place of embedding them again; the encoder must be the
    one that made them, and they must cover `paths`."""
    with np.load(path) as saved:
        if str(saved["fingerprint"]) != fingerprint:
            raise SystemExit(f"{path}: saved by another encoder ({saved['fingerprint']})")
        kept = [i for i, p in enumerate(saved["path"].tolist()) if p in paths]
        if len(kept) < len(paths):
            raise SystemExit(f"{path}: holds {len(kept)} of the {len(paths)} crops needed")
        if "areas" not in saved:
            raise SystemExit(f"{path}: holds no crop areas (an older file); embed again")
        return EmbeddedFiles(
            [str(p) for p in saved["path"][kept]],
            saved["embeddings"][kept].astype(np.float32),
            saved["scores"][kept],
            [],
            saved["areas"][kept],
        )


def machine(device: str) -> dict[str, Any]:
    import scipy

    return {**describe(), "scipy": scipy.__version__, "device": device}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from karyosearch.model.checkpoint import load_encoder
    from karyosearch.model.embed import embed_files
    from karyosearch.util.runtime import pick_device

    device = pick_device(args.device)
    encoder = load_encoder(args.model, device)
    dataset = read_dataset(args.data)
    embed_seconds = 0.0

    def embed(paths: list[str]) -> EmbeddedFiles:
        """The crops' scores: embedded, or read from --scores-in; timed."""
        nonlocal embed_seconds
        print(
            f"{dataset.root.name}: embedding {len(paths)} crops on {device}",
            file=sys.stderr,
        )
        start = time.perf_counter()
        if args.scores_in is not None:
            emb = load_scores(args.scores_in, getattr(encoder, "fingerprint", ""), set(paths))
        else:
            emb = embed_files(encoder, paths, batch_size=args.batch_size)
        embed_seconds = time.perf_counter() - start
        return emb

    # 1-2. temperature, size model and weight, penalties: the library's fit (never test cells)
    fit = fit_karyotype(
        encoder,
        dataset,
        split=args.split,
        seed=args.seed,
        penalty_cells=args.penalty_cells,
        fpr_cells=args.fpr_cells,
        max_fpr=args.max_fpr,
        homologue_weights=args.homologue_weights,
        use_size=not args.no_size,
        limit_cells=args.limit_cells,
        embed=embed,
    )
    for w in fit.warnings:
        print(f"warning: {w}", file=sys.stderr)
    params, cells, emb, seed, split_name = fit.params, fit.cells, fit.embedded, fit.seed, fit.split
    temperature, warnings, mean, sd = fit.temperature, fit.warnings, fit.size_mean, fit.size_sd
    labelled, row_of = fit.labelled, fit.row_of
    if args.scores_out is not None:
        save_scores(args.scores_out, emb, dataset, cells, getattr(encoder, "fingerprint", ""))
    params_out = args.params_out or params_path(args.model)
    save_params(params, params_out)

    # 3. test cells
    test = [lc for c in cells if c.side == "test" and (lc := labelled(c)) is not None]
    excluded = [c.cell_id for c in cells if c.side == "test" and c.karyotype is None]
    ev = evaluate_cells([lc for lc, _ in test], [p for _, p in test], params, args.repeats)
    audit = audit_test_cells(test, emb, row_of, mean, sd)
    called = {c["cell"]: c["called"] for c in ev["cells"]}
    for f in audit:
        f["called"] = called[f["cell"]]
    flagged = {f["cell"] for f in audit}
    kept = [(lc, p) for lc, p in test if lc.cell_id not in flagged]
    ev_audited = evaluate_cells([lc for lc, _ in kept], [p for _, p in kept], params)

    out = {
        "benchmark": "karyotype",
        "dataset": dataset.root.name,
        "data": str(dataset.root),
        "model": str(args.model),
        "model_fingerprint": getattr(encoder, "fingerprint", ""),
        "arch": encoder.cfg.arch,
        "split": split_name,
        "seed": seed,
        "n_cells": {s: sum(c.side == s for c in cells) for s in ("train", "val", "test")},
        "test_cells_without_a_readable_karyotype": excluded,
        "params": params.to_json(),
        "params_file": str(params_out),
        "simulated": fit.n_simulated,
        "embed_seconds": embed_seconds,
        "unreadable": [{"path": e.path, "reason": e.reason} for e in emb.errors],
        "warnings": warnings,
        "test": ev,
        "label_audit": {
            "rule": f"a test cell with a crop more than {LABEL_AUDIT_Z:g} sd from its labelled "
            "class's relative size (training cells' size model; no encoder involved) has "
            "labels that contradict its images",
            "max_z": LABEL_AUDIT_Z,
            "flagged": audit,
            "test_without_flagged": {k: v for k, v in ev_audited.items() if k != "cells"},
        },
        "machine": machine(str(device)),
        "date": timestamp(),
        "argv": sys.argv[1:] if argv is None else list(argv),
    }
    json_out = (
        args.json_out or REPO / "benchmarks" / "results" / f"karyotype_{dataset.root.name}.json"
    )
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")

    c = ev["crops"]
    print(
        f"T = {temperature:.4g}; penalties {params.penalties}, homologue weight "
        f"{params.homologue_weight:g}, size weight {params.size_weight:.3g} "
        f"(fit: {params.fitted.get('penalty')})"
    )
    print(f"test: {ev['n_cells']} cells ({ev['n_abnormal']} abnormal), {c['n_crops']} crops")
    print(
        f"  crop accuracy: independent {c['accuracy_independent']:.4f}, with size "
        f"{c['accuracy_with_size']:.4f}, joint {c['accuracy_joint']:.4f}; errors removed "
        f"{c['errors_removed']:.1%} (by size alone {c['errors_removed_by_size']:.1%})"
    )
    print(
        f"  exact karyotype: {ev['exact_karyotype_rate']:.3f} "
        f"(from argmax counts: {ev['exact_karyotype_rate_argmax_counts']:.3f})"
    )
    if ev["sensitivity"] is not None:
        print(
            f"  abnormal cells: sensitivity {ev['sensitivity']:.3f}, "
            f"exact {ev['exact_rate_abnormal']:.3f}"
        )
    if ev["specificity"] is not None:
        fp = ev["normal_called_abnormal"]
        print(
            f"  normal cells: specificity {ev['specificity']:.3f}; called abnormal "
            f"{fp['k']}/{fp['n']} (95% interval {fp['ci95'][0]:.1%}-{fp['ci95'][1]:.1%})"
        )
    for t, calls in ev["confusion"].items():
        print(f"  {t:>10} -> " + ", ".join(f"{k} {n}" for k, n in calls.items()))
    for f in audit:
        print(
            f"  label audit: {f['cell']} ({f['true']}, called {f['called']}): "
            + ", ".join(f"{c['label']} at {c['z']:+.1f} sd" for c in f["crops"])
        )
    if audit and ev_audited["exact_rate_abnormal"] is not None:
        print(
            f"  without the {len(audit)} flagged cells: abnormal exact "
            f"{ev_audited['exact_rate_abnormal']:.3f} ({ev_audited['n_abnormal']} cells), "
            f"specificity {ev_audited['specificity']:.3f}"
        )
    print(f"params: {params_out}\nresults: {json_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
