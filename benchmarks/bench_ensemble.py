"""An ensemble of encoders trained on one split: would averaging them (or distilling the
average into one network) pay?

Each `--model` embeds the crops of its own split's part (every model must have trained on the
same split and seed); an ensemble's embedding is the unit mean of its members' (the
concatenation of their unit embeddings, scaled: its inner products are the mean of theirs),
its class the argmax of their mean proxy scores. Reported for every member alone and every
combination of two or more: nearest-proxy accuracy and Recall@1 among the crops.

    .venv/bin/python benchmarks/bench_ensemble.py --data ../shared/data/bioimlab \\
        --model runs/a/model.pt --model runs/b/model.pt \\
        --json-out benchmarks/results/ensemble/NAME.val.json

`--part val` (the default) is for the choice; an ensemble is worth distilling only if it
pays there.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_robustness import header, own_part, prepared, save  # noqa: E402

from karyosearch.evaluation.metrics import recall_at_k  # noqa: E402
from karyosearch.model.checkpoint import load_encoder  # noqa: E402
from karyosearch.model.embed import embed_arrays  # noqa: E402
from karyosearch.model.predict import predicted_classes  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, action="append", required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--part", choices=["val", "test"], default="val")
    parser.add_argument("--json-out", type=Path, required=True)
    args = parser.parse_args(argv)
    if len(args.model) < 2:
        parser.error("an ensemble needs at least two --model")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    models = args.model
    first = argparse.Namespace(
        model=models[0], data=args.data, split=None, seed=None, part=args.part
    )
    encoder, dataset, split, seed, warnings, part = own_part(first)
    paths = [str(dataset.items[i].path) for i in part]
    labels = np.asarray([dataset.items[i].label for i in part])
    started = time.monotonic()
    members = {}
    inputs = {}  # members of one input size, canvas and preprocessing share their inputs
    for path in models:
        member = encoder if path == models[0] else load_encoder(path)
        trained = member.train_record or {}
        if (trained.get("split"), trained.get("seed")) != (split, seed):
            sys.exit(f"error: {path} trained on split {trained.get('split')} seed "
                     f"{trained.get('seed')}, not {split} seed {seed}")  # fmt: skip
        cfg = member.cfg
        how = (cfg.image_size, cfg.canvas, cfg.preprocess_version)
        if how not in inputs:
            inputs[how] = prepared(paths, lambda x: x, *how)
        members[str(path)] = embed_arrays(member, inputs[how])
    rows = []
    for r in range(1, len(members) + 1):
        for combo in itertools.combinations(members, r):
            emb = np.concatenate([members[m][0] for m in combo], 1) / np.sqrt(len(combo))
            scores = sum(members[m][1] for m in combo) / len(combo)
            acc = float(np.mean(predicted_classes(scores) == labels))
            r1 = recall_at_k(emb, labels, (1,))[1]
            rows.append({"members": list(combo), "accuracy": acc, "recall_at_1": r1})
            print(f"{100 * acc:6.2f}%  R@1 {100 * r1:6.2f}%  {' + '.join(combo)}", flush=True)
    save(
        args.json_out,
        header("ensemble", first, encoder, split, seed),
        {
            "models": [str(m) for m in models],
            "part": args.part,
            "n": len(paths),
            "warnings": warnings,
            "results": rows,
            "seconds": time.monotonic() - started,
        },
    )


if __name__ == "__main__":
    main()
