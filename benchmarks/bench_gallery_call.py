"""The training crops as the archive: does the neighbours' vote add to the proxies on the
encoder's own split?

The archive call (`model.predict.combined_call`) mixes the proxies' softmax with the vote of
a query's nearest labelled crops. `bench_archive_call.py` measures it on stand-ins for an
unseen lab; this measures it where the encoder was trained: the archive is the training part
of the encoder's own split (what a lab's index holds when it indexes the crops the encoder
learnt from), the queries its validation and test crops. Every setting of the grid (k
neighbours, temperature T, weight w of the vote, pull b towards the archive's class means) is
scored on the validation crops; the best one (ties: the least w, then the least b, then the
lowest T and k) is then read once on the test crops, beside the proxies alone and the
neighbours alone.

    .venv/bin/python benchmarks/bench_gallery_call.py \\
        --model models/bioimlab-proxy-resnext-cbam-128px.pt --data ../shared/data/bioimlab \\
        --json-out benchmarks/results/gallery_call_bioimlab.json
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_robustness import add_own_split_args, header, own_split, prepared, save  # noqa: E402

from karyosearch.labels import CLASS_NAMES  # noqa: E402
from karyosearch.model.embed import embed_arrays  # noqa: E402
from karyosearch.model.predict import combined_call, neighbour_votes  # noqa: E402

KS = [1, 3, 5, 8, 16]
TEMPERATURES = [0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
WEIGHTS = [round(0.05 * i, 2) for i in range(21)]
PULLS = [0.0, 0.5, 1.0, 2.0]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_own_split_args(parser)
    parser.add_argument("--json-out", type=Path, required=True)
    return parser.parse_args(argv)


def embed_part(encoder, dataset, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(embeddings, proxy scores, labels) of the dataset rows, prepared as the encoder was."""
    cfg = encoder.cfg
    paths = [str(dataset.items[i].path) for i in rows]
    images = prepared(paths, lambda x: x, cfg.image_size, cfg.canvas, cfg.preprocess_version)
    emb, scores = embed_arrays(encoder, images)
    labels = np.asarray([dataset.items[i].label for i in rows])
    return emb.astype(np.float32), scores.astype(np.float64), labels


def nearest(archive: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and cosines of each query's k nearest archived crops (exact search)."""
    sims = queries @ archive.T
    order = np.argsort(-sims, axis=1)[:, :k]
    return order, np.take_along_axis(sims, order, axis=1)


def class_means(emb: np.ndarray, labels: np.ndarray) -> np.ndarray:
    means = np.stack([emb[labels == c].mean(0) for c in range(len(CLASS_NAMES))])
    return means / np.linalg.norm(means, axis=1, keepdims=True)


def accuracies(part: dict, archive_labels: np.ndarray, means: np.ndarray) -> dict:
    """Accuracy of every (k, T, w, b) setting on one query part."""
    centroid_scores = part["emb"] @ means.T
    out = {}
    for k in KS:
        votes = neighbour_votes(
            archive_labels[part["order"][:, :k]], part["sims"][:, :k], len(CLASS_NAMES)
        )
        for t, w, b in itertools.product(TEMPERATURES, WEIGHTS, PULLS):
            probs = combined_call(part["scores"], votes, w, t, centroid_scores, b)
            out[(k, t, w, b)] = float(np.mean(probs.argmax(1) == part["labels"]))
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.monotonic()
    encoder, dataset, split, seed, warnings, sides = own_split(args)
    parts = {}
    for name in ("train", "val", "test"):
        emb, scores, labels = embed_part(encoder, dataset, getattr(sides, name))
        parts[name] = {"emb": emb, "scores": scores, "labels": labels}
        print(f"{name}: {len(labels)} crops embedded", flush=True)
    archive = parts.pop("train")
    means = class_means(archive["emb"], archive["labels"])
    for part in parts.values():
        part["order"], part["sims"] = nearest(archive["emb"], part["emb"], max(KS))
    val = accuracies(parts["val"], archive["labels"], means)
    test = accuracies(parts["test"], archive["labels"], means)
    best = max(val.values())
    chosen = min((s for s, a in val.items() if a == best), key=lambda s: (s[2], s[3], s[1], s[0]))
    proxies = (KS[0], TEMPERATURES[0], 0.0, 0.0)
    rows = {
        "proxies alone": proxies,
        "neighbours alone (k 5)": (5, 1.0, 1.0, 0.0),
        "chosen on validation": chosen,
    }
    results = {}
    for name, s in rows.items():
        results[name] = {
            "k": s[0],
            "temperature": s[1],
            "weight": s[2],
            "pull": s[3],
            "val_accuracy": val[s],
            "test_accuracy": test[s],
        }
        print(
            f"{name:24s} k {s[0]:2d} T {s[1]:<4} w {s[2]:<4} b {s[3]:<3}  "
            f"val {100 * val[s]:6.2f}%  test {100 * test[s]:6.2f}%",
            flush=True,
        )
    save(
        args.json_out,
        header("gallery_call", args, encoder, split, seed),
        {
            "n": {"archive": len(archive["labels"])}
            | {n: len(p["labels"]) for n, p in parts.items()},
            "warnings": warnings,
            "grid": {"k": KS, "temperature": TEMPERATURES, "weight": WEIGHTS, "pull": PULLS},
            "results": results,
            "val_settings_at_best": sum(a == best for a in val.values()),
            "seconds": time.monotonic() - started,
        },
    )


if __name__ == "__main__":
    main()
