"""Training recipes compared on validation: one run per variant, its learning curve saved.

Each variant is the `default` preset with some Recipe fields changed, trained with
`karyosearch.train.loop.train` on the given data, split and seed (the test part is never touched:
choices are made on validation accuracy only). The full training record (recipe, curve of
epoch / wall time / training loss / validation loss and accuracy) goes to
`benchmarks/results/recipes/<variant>.json`; a variant whose JSON exists is skipped and an
interrupted one resumes from its `.last` checkpoint under --runs-dir.

    .venv/bin/python benchmarks/bench_recipe.py \\
        --variant 'heavy-aug: rotate=180.0 vertical_flips=True scale=(0.8,1.05) translate=0.06 \\
                   intensity=0.2 label_smoothing=0.1' \\
        --variant 'default:' \\
        --variant 'size-channel: canvas_percentile=95.0'

Run it alone: two cores shared with anything else give wall times that mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from karyosearch.errors import UserError  # noqa: E402
from karyosearch.train.loop import train  # noqa: E402
from karyosearch.train.recipe import TrainOptions, parse_overrides  # noqa: E402
from karyosearch.util.atomic import atomic_path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "recipes"


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """'name: key=value key=value' -> (name, overrides); values are Python literals."""
    name, _, rest = text.partition(":")
    return name.strip(), parse_overrides(rest.split())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--variant", action="append", required=True, help="'name: key=value ...'")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "bioimlab"))
    ap.add_argument("--arch", default="proxy-resnext-cbam")
    ap.add_argument("--split", default="paper")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None, help="default: the preset's")
    ap.add_argument("--runs-dir", type=Path, default=REPO / "runs" / "recipes")
    ap.add_argument("--results-dir", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    try:
        variants = [parse_variant(spec) for spec in args.variant]
    except UserError as err:
        raise SystemExit(f"error: {err}") from None
    args.results_dir.mkdir(parents=True, exist_ok=True)
    for name, overrides in variants:
        result = args.results_dir / f"{name}.json"
        if result.exists():
            print(f"[skip] {name}: {result} exists")
            continue
        print(f"[train] {name}: {overrides}", flush=True)
        record = train(
            TrainOptions(
                data=args.data,
                out=str(args.runs_dir / name / "model.pt"),
                arch=args.arch,
                split=args.split,
                seed=args.seed,
                epochs=args.epochs,
                overrides=overrides,
                resume=True,
            ),
            log=lambda line: print(line, flush=True),
        )
        record = {"variant": name, "overrides": overrides, "load_average": os.getloadavg()} | record
        with atomic_path(result) as tmp:
            tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        print(
            f"[done] {name}: best val {100 * record['val_accuracy']:.2f}% at epoch "
            f"{record['best_epoch']}, {record['train_seconds'] / 60:.1f} min",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
