"""Robustness to another lab's images: accuracy on test crops degraded the ways labs differ.

Each test crop of the encoder's own split is read, degraded (`degrade.py`: scaled by 0.5 and
0.75, gamma 0.7 and 1.4, Gaussian blur of 1 px, JPEG quality 50) before the pipeline, then
sent through the one pipeline (polarity, crop, prepare) and the encoder. Reported per
degradation: nearest-proxy accuracy, Recall@1 among the degraded test crops, and the drop
from the clean figure in points. The target (issue 15): every drop at most 2 points.

    .venv/bin/python benchmarks/bench_robustness.py \\
        --model models/gband612-proxy-resnext-cbam-96px.pt --data ../shared/data/gband612 \\
        --json-out benchmarks/results/robustness_gband612.json

The split and seed default to the ones the model trained on (its test part was never seen).
`--part val` degrades the validation crops instead, to choose between recipes (an
augmentation, say) without looking at the test crops.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from degrade import DEGRADATIONS  # noqa: E402

from karyosearch.data.datasets import read_dataset  # noqa: E402
from karyosearch.data.image import crop_chromosome, prepare_input, read_grey  # noqa: E402
from karyosearch.data.rulings import CONTRADICTED_CELLS, audited  # noqa: E402
from karyosearch.data.splits import split_dataset  # noqa: E402
from karyosearch.evaluation.metrics import recall_at_k  # noqa: E402
from karyosearch.evaluation.provenance import resolve_split  # noqa: E402
from karyosearch.model.checkpoint import load_encoder  # noqa: E402
from karyosearch.model.embed import embed_arrays  # noqa: E402
from karyosearch.model.predict import predicted_classes  # noqa: E402
from karyosearch.util.atomic import write_json  # noqa: E402
from karyosearch.util.runtime import describe, timestamp  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_own_split_args(parser)
    parser.add_argument("--limit", type=int, default=0, help="crops, a seeded sample (0: all)")
    parser.add_argument(
        "--part",
        choices=["test", "val"],
        default="test",
        help="which part of the split is degraded: test (the figures), or val (to choose a "
        "recipe without looking at the test crops)",
    )
    parser.add_argument(
        "--audit-cells",
        default=",".join(CONTRADICTED_CELLS),
        help="comma-separated cell ids whose labels their own images contradict: every figure "
        "is also given without their crops (default: the ruling's three gband612 cells)",
    )
    parser.add_argument("--json-out", type=Path, required=True)
    return parser.parse_args(argv)


def add_own_split_args(parser: argparse.ArgumentParser) -> None:
    """`--model`, `--data`, and `--split`, `--seed` defaulting to the model's own (`own_split`)."""
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default=None, help="default: the model's training split")
    parser.add_argument("--seed", type=int, default=None, help="default: the model's seed")


def header(
    benchmark: str, args: argparse.Namespace, encoder: Any, split: str, seed: int
) -> dict[str, Any]:
    """The first keys of a saved result: what ran, with which encoder, on which split."""
    return {
        "benchmark": benchmark,
        "command": " ".join(sys.argv),
        "model": str(args.model),
        "fingerprint": encoder.fingerprint,
        "dataset": str(args.data),
        "split": split,
        "seed": seed,
    }


def save(path: Path, head: dict[str, Any], body: dict[str, Any]) -> None:
    """Write a result to `path`: `head` (`header`), `body`, then the machine and the time."""
    result = {**head, **body, "machine": describe(), "created": timestamp()}
    print(f"saved {write_json(path, result)}")


def prepared(paths: list[str], degrade, size: int, canvas: int, version: int) -> np.ndarray:
    """The network inputs of `paths`, degraded, prepared as the encoder (preprocessing
    `version`) was trained."""

    def one(path: str) -> np.ndarray:
        crop = crop_chromosome(degrade(read_grey(path)), "auto", path, version)
        return prepare_input(crop, size, canvas)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return np.stack(list(pool.map(one, paths)))


def own_split(args: argparse.Namespace) -> tuple[Any, Any, str, int, list[str], Any]:
    """(encoder, dataset, split, seed, warnings, the split's sides) for `--model`, `--data`:
    the split and seed default to the ones the model trained on; warnings are printed."""
    encoder = load_encoder(args.model)
    dataset = read_dataset(args.data)
    split, seed, warnings = resolve_split(
        encoder.train_record or {}, dataset, args.split, args.seed
    )
    for warning in warnings:
        print(f"warning: {warning}", flush=True)
    return encoder, dataset, split, seed, warnings, split_dataset(dataset, split, seed)


def own_part(args: argparse.Namespace) -> tuple[Any, Any, str, int, list[str], np.ndarray]:
    """As `own_split`, with the rows of `args.part` for the sides."""
    encoder, dataset, split, seed, warnings, sides = own_split(args)
    return encoder, dataset, split, seed, warnings, getattr(sides, args.part)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    encoder, dataset, split, seed, warnings, test = own_part(args)
    if args.limit and args.limit < len(test):
        test = np.sort(np.random.default_rng(0).choice(test, args.limit, replace=False))
    paths = [str(dataset.items[i].path) for i in test]
    labels = np.asarray([dataset.items[i].label for i in test])
    audit_cells = sorted({c.strip() for c in args.audit_cells.split(",") if c.strip()})
    kept = audited([dataset.items[i].cell_id for i in test], audit_cells)
    audit = not kept.all()  # some crops of those cells are in this part
    cfg = encoder.cfg
    rows = []
    for name, degrade in DEGRADATIONS.items():
        started = time.monotonic()
        emb, scores = embed_arrays(
            encoder, prepared(paths, degrade, cfg.image_size, cfg.canvas, cfg.preprocess_version)
        )
        right = predicted_classes(scores) == labels
        acc = float(np.mean(right))
        r1 = recall_at_k(emb, labels, (1,))[1]
        row = {"degradation": name, "accuracy": acc, "recall_at_1": r1}
        if audit:  # the cells whose labels contradict their images left out
            row["audited"] = {
                "accuracy": float(np.mean(right[kept])),
                "recall_at_1": recall_at_k(emb[kept], labels[kept], (1,))[1],
                "n_test": int(kept.sum()),
            }
        rows.append({**row, "seconds": time.monotonic() - started})
        clean = rows[0]
        print(
            f"{name:14s} accuracy {100 * acc:6.2f}% ({100 * (acc - clean['accuracy']):+.2f})  "
            f"R@1 {100 * r1:6.2f}% ({100 * (r1 - clean['recall_at_1']):+.2f})",
            flush=True,
        )
    for row in rows:
        row["accuracy_drop_points"] = 100 * (rows[0]["accuracy"] - row["accuracy"])
        row["recall_at_1_drop_points"] = 100 * (rows[0]["recall_at_1"] - row["recall_at_1"])
        if audit:
            clean = rows[0]["audited"]["accuracy"]
            row["audited"]["accuracy_drop_points"] = 100 * (clean - row["audited"]["accuracy"])
    save(
        args.json_out,
        header("robustness", args, encoder, split, seed),
        {
            "part": args.part,
            "n_test": len(paths),
            "audited_cells": audit_cells if audit else [],
            "warnings": warnings,
            "target": "every drop at most 2 points of accuracy",
            "worst_accuracy_drop_points": max(r["accuracy_drop_points"] for r in rows),
            "results": rows,
        },
    )


if __name__ == "__main__":
    main()
