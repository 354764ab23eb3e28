"""Embedding transforms fit after training: do they lift Recall@1?

Recall@1 trails nearest-proxy accuracy by one to six points on BioImLab (`paper` split), the
widest gap of issue 15's targets. This study asks whether a fixed transform of the 2048-d
embeddings, fit on the encoder's own training crops and applied before the L2 norm, closes
it: centring (minus the training mean), PCA whitening and within-class whitening (each with
a shrinkage `a` times the mean eigenvalue), and a pull toward the class proxies
(x + b * sum_c softmax(x.p_c / T) p_c, T the encoder's temperature). Reported per transform:
Recall@1/2/4/8 among the validation crops. With `--also`, Recall@1 among crops of another
dataset, a stand-in for another lab's images (issue 15, point 4): a transform that only
bends the embeddings toward the proxies' call loses there what the embeddings carry beyond
the proxies.

    .venv/bin/python benchmarks/bench_embedding_transforms.py \\
        --model runs/q/model.pt --data ../shared/data/bioimlab \\
        --also ../shared/data/gband612 \\
        --json-out benchmarks/results/embedding_transforms/NAME.val.json

Validation crops only: a transform is a choice, and choices are made on validation.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_robustness import add_own_split_args, header, own_split, prepared, save  # noqa: E402

from karyosearch.data.datasets import read_dataset  # noqa: E402
from karyosearch.data.splits import split_dataset  # noqa: E402
from karyosearch.evaluation.metrics import recall_at_k  # noqa: E402
from karyosearch.model.embed import embed_arrays  # noqa: E402
from karyosearch.model.predict import log_probs, predicted_classes  # noqa: E402

SHRINKAGES = (0.1, 0.3, 1.0)
PULLS = (0.5, 1.0, 2.0)

Transform = Callable[[np.ndarray], np.ndarray]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_own_split_args(parser)
    parser.add_argument("--also", type=Path, default=None, help="another dataset's folder")
    parser.add_argument("--also-split", default="karyo", help="its split (default: karyo)")
    parser.add_argument("--also-limit", type=int, default=1000, help="its validation crops used")
    parser.add_argument("--json-out", type=Path, required=True)
    return parser.parse_args(argv)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def whitening(centred: np.ndarray, shrinkage: float) -> np.ndarray:
    """The symmetric (ZCA) whitening matrix of rows `centred`, shrunk toward the identity
    by `shrinkage` times the mean eigenvalue of their covariance."""
    values, vectors = np.linalg.eigh(np.cov(centred.T))
    values = np.clip(values, 0, None)
    return (vectors / np.sqrt(values + shrinkage * values.mean())) @ vectors.T


def transforms(
    train: np.ndarray, labels: np.ndarray, proxies: np.ndarray, temperature: float
) -> dict[str, Transform]:
    """Every transform of the study, fit on the training embeddings `train` (unit rows)."""
    mean = train.mean(0)
    means = np.stack([train[labels == c].mean(0) for c in range(len(proxies))])
    found: dict[str, Transform] = {"plain": unit, "centred": lambda x: unit(x - mean)}
    for a in SHRINKAGES:
        total = whitening(train - mean, a)
        within = whitening(train - means[labels], a)
        found[f"whitened a={a}"] = lambda x, w=total: unit((x - mean) @ w)
        found[f"within-class whitened a={a}"] = lambda x, w=within: unit((x - mean) @ w)

    def pull(x: np.ndarray, b: float) -> np.ndarray:
        weights = np.exp(log_probs(x @ proxies.T, temperature))
        return unit(x + b * weights @ proxies)

    for b in PULLS:
        found[f"proxy pull b={b}"] = lambda x, b=b: pull(x, b)
    return found


def embedded(encoder: Any, dataset: Any, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unit embeddings, labels) of `dataset`'s crops `rows`, prepared as `encoder` was."""
    cfg = encoder.cfg
    paths = [str(dataset.items[i].path) for i in rows]
    images = prepared(paths, lambda x: x, cfg.image_size, cfg.canvas, cfg.preprocess_version)
    return embed_arrays(encoder, images)[0], np.asarray([dataset.items[i].label for i in rows])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.monotonic()
    encoder, dataset, split, seed, warnings, sides = own_split(args)
    train, train_labels = embedded(encoder, dataset, sides.train)
    val, val_labels = embedded(encoder, dataset, sides.val)
    proxies = encoder.unit_proxies().detach().cpu().numpy()
    accuracy = float(np.mean(predicted_classes(val @ proxies.T) == val_labels))
    print(f"validation: {len(val)} crops, nearest-proxy accuracy {100 * accuracy:.2f}%")
    other = None
    if args.also is not None:
        also = read_dataset(args.also)
        rows = split_dataset(also, args.also_split, 0).val
        if args.also_limit and args.also_limit < len(rows):
            rows = np.sort(np.random.default_rng(0).choice(rows, args.also_limit, replace=False))
        other = embedded(encoder, also, rows)
    results = []
    for name, transform in transforms(
        train, train_labels, proxies, encoder.score_temperature
    ).items():
        recall = recall_at_k(transform(val), val_labels)
        row = {"transform": name, **{f"recall_at_{k}": v for k, v in recall.items()}}
        line = f"{name:30s} R@1 {100 * recall[1]:6.2f}%  R@8 {100 * recall[8]:6.2f}%"
        if other is not None:
            row["also_recall_at_1"] = recall_at_k(transform(other[0]), other[1], (1,))[1]
            line += f"   {args.also.name} R@1 {100 * row['also_recall_at_1']:6.2f}%"
        results.append(row)
        print(line, flush=True)
    save(
        args.json_out,
        header("embedding_transforms", args, encoder, split, seed),
        {
            "part": "val",
            "n": {"train": len(train), "val": len(val)},
            "val_accuracy": accuracy,
            "also": None
            if other is None
            else {
                "dataset": str(args.also),
                "split": args.also_split,
                "seed": 0,
                "n": len(other[1]),
            },
            "warnings": warnings,
            "results": results,
            "seconds": time.monotonic() - started,
        },
    )


if __name__ == "__main__":
    main()
