"""Flip test-time augmentation: does embedding a crop with its mirror images pay?

Each crop of the encoder's own split is prepared once, then embedded as it is and flipped
left-right, top-bottom and both; a view set's embedding is the unit mean of its views'
embeddings, so its nearest proxy is the argmax of the mean of their proxy scores. Reported
per view set: nearest-proxy accuracy and Recall@1 among the crops, and the gain over the crop
alone in points.

    .venv/bin/python benchmarks/bench_tta.py \\
        --model models/gband612-proxy-resnext-cbam-96px.pt --data ../shared/data/gband612 \\
        --json-out benchmarks/results/tta_gband612.val.json

`--part val` (the default) is for the choice: a view set is adopted on validation crops only,
and `--part test` then reports what it buys on the test crops.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_robustness import add_own_split_args, header, own_part, prepared, save  # noqa: E402

from karyosearch.evaluation.metrics import recall_at_k  # noqa: E402
from karyosearch.model.embed import embed_arrays  # noqa: E402
from karyosearch.model.predict import predicted_classes  # noqa: E402

VIEWS = {  # prepared (N, S, S) images -> one view of them
    "plain": lambda x: x,
    "left-right": lambda x: x[:, :, ::-1],
    "top-bottom": lambda x: x[:, ::-1, :],
    "both": lambda x: x[:, ::-1, ::-1],
}
VIEW_SETS = {
    "plain": ("plain",),
    "plain + left-right": ("plain", "left-right"),
    "plain + top-bottom": ("plain", "top-bottom"),
    "all four": ("plain", "left-right", "top-bottom", "both"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_own_split_args(parser)
    parser.add_argument("--part", choices=["val", "test"], default="val")
    parser.add_argument("--json-out", type=Path, required=True)
    return parser.parse_args(argv)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    encoder, dataset, split, seed, warnings, part = own_part(args)
    paths = [str(dataset.items[i].path) for i in part]
    labels = np.asarray([dataset.items[i].label for i in part])
    cfg = encoder.cfg
    started = time.monotonic()
    images = prepared(paths, lambda x: x, cfg.image_size, cfg.canvas, cfg.preprocess_version)
    views = {}
    for name, view in VIEWS.items():
        views[name] = embed_arrays(encoder, np.ascontiguousarray(view(images)))
    rows = []
    for name, members in VIEW_SETS.items():
        emb = unit(sum(views[v][0] for v in members))
        scores = sum(views[v][1] for v in members) / len(members)
        acc = float(np.mean(predicted_classes(scores) == labels))
        r1 = recall_at_k(emb, labels, (1,))[1]
        rows.append({"views": name, "accuracy": acc, "recall_at_1": r1})
    for row in rows:
        row["accuracy_gain_points"] = 100 * (row["accuracy"] - rows[0]["accuracy"])
        row["recall_at_1_gain_points"] = 100 * (row["recall_at_1"] - rows[0]["recall_at_1"])
        print(
            f"{row['views']:20s} accuracy {100 * row['accuracy']:6.2f}% "
            f"({row['accuracy_gain_points']:+.2f})  R@1 {100 * row['recall_at_1']:6.2f}% "
            f"({row['recall_at_1_gain_points']:+.2f})",
            flush=True,
        )
    save(
        args.json_out,
        header("tta", args, encoder, split, seed),
        {
            "part": args.part,
            "n": len(paths),
            "warnings": warnings,
            "results": rows,
            "seconds": time.monotonic() - started,
        },
    )


if __name__ == "__main__":
    main()
