"""Apply the Q-band shipping rule (models/README.md) to a candidate recipe, on validation only.

The rule, written before each candidate is trained: a candidate recipe replaces the shipped
one when (a) its mean best validation accuracy over the `paper` split's seeds is above the
shipped recipe's; the seed it ships is (b) the one with the highest best validation accuracy
(ties: the lowest validation loss), if (c) on degraded validation crops
(`bench_robustness.py --part val`) that seed's mean over the seven conditions is at least the
shipped encoder's and no drop is larger than the shipped encoder's worst (or than
`--max-drop`, where the candidate's rule sets its own bound).

This reads only the validation fields of the runs' JSON (`train.val_accuracy`,
`train.val_loss`, `train.best_epoch`) and the robustness JSON of `--part val`; it never
prints a test figure, so a decision can be made before the test figures are looked at.

    R=bioimlab-proxy-resnext-cbam-paper-s{seed}-default-e20
    J=benchmarks/results/robustness_bioimlab
    .venv/bin/python benchmarks/judge_candidate.py \\
        --candidate $R-px128-init_gband612px96s0 --baseline $R-px96-init_gband612px96s0 \\
        --robustness $J.px128.paper-s0.val.json \\
        --baseline-robustness $J.from-gband-96px.paper-s1.val.json

Without `--robustness` it stops after (a) and (b) and names the seed whose robustness run (c)
needs. Exit status 0 whether or not the candidate passes; the verdict is printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

RUNS = Path(__file__).resolve().parent / "results" / "runs"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--candidate", required=True, help="run name with {seed} (benchmarks/results/runs)"
    )
    parser.add_argument("--baseline", required=True, help="the shipped recipe's run name")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--robustness", type=Path, help="the best seed's --part val JSON")
    parser.add_argument(
        "--baseline-robustness", type=Path, help="the shipped encoder's --part val JSON"
    )
    parser.add_argument(
        "--max-drop",
        type=float,
        help="the rule's bound on the worst drop, in points (default: the shipped encoder's worst)",
    )
    parser.add_argument("--runs", type=Path, default=RUNS, help="folder of the runs' JSON")
    return parser.parse_args(argv)


def validation(runs: Path, name: str, seed: int) -> dict[str, Any]:
    """A run's validation record: best accuracy (%), its loss and epoch."""
    path = runs / f"{name.format(seed=seed)}.json"
    if not path.is_file():
        sys.exit(f"error: {path}: no such run (train it, or check the name)")
    train = json.loads(path.read_text())["train"]
    return {
        "seed": seed,
        "val_accuracy": 100 * train["val_accuracy"],
        "val_loss": train["val_loss"],
        "best_epoch": train["best_epoch"],
    }


def degraded(path: Path) -> tuple[float, float, str]:
    """(mean accuracy % over the conditions, worst drop in points, its condition) of a
    robustness JSON measured on validation crops."""
    record = json.loads(path.read_text())
    if record.get("part") != "val":
        sys.exit(f"error: {path}: measured on part {record.get('part')!r}; the rule reads val")
    results = record["results"]
    worst = max(results, key=lambda r: r["accuracy_drop_points"])
    mean = 100 * statistics.mean(r["accuracy"] for r in results)
    return mean, worst["accuracy_drop_points"], worst["degradation"]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    cand = [validation(args.runs, args.candidate, s) for s in seeds]
    base = [validation(args.runs, args.baseline, s) for s in seeds]
    for name, rows in (("candidate", cand), ("shipped recipe", base)):
        cells = ", ".join(
            f"seed {r['seed']} {r['val_accuracy']:.2f}% (epoch {r['best_epoch']}, "
            f"loss {r['val_loss']:.3f})"
            for r in rows
        )
        print(f"{name}: {cells}")
    mean_c = statistics.mean(r["val_accuracy"] for r in cand)
    mean_b = statistics.mean(r["val_accuracy"] for r in base)
    passes_a = mean_c > mean_b
    print(f"(a) mean best validation {mean_c:.2f}% against {mean_b:.2f}%: {_verdict(passes_a)}")
    best = max(cand, key=lambda r: (r["val_accuracy"], -r["val_loss"]))
    print(f"(b) the seed it would ship: {best['seed']} ({best['val_accuracy']:.2f}%)")
    if args.robustness is None or args.baseline_robustness is None:
        print(
            f"(c) needs: bench_robustness.py --model <run of seed {best['seed']}>/model.pt "
            "--part val, and the shipped encoder's"
        )
        return
    mean_r, drop, where = degraded(args.robustness)
    floor, bound, bound_where = degraded(args.baseline_robustness)
    if args.max_drop is not None:
        bound, bound_where = args.max_drop, "the rule's bound"
    passes_c = mean_r >= floor and drop <= bound
    print(
        f"(c) degraded validation mean {mean_r:.2f}% (at least {floor:.2f}%), worst drop "
        f"{drop:.2f} points, {where} (at most {bound:.2f}, {bound_where}): {_verdict(passes_c)}"
    )
    print(f"verdict: {'ships' if passes_a and passes_c else 'not shipped'}")


def _verdict(ok: bool) -> str:
    return "passes" if ok else "fails"


if __name__ == "__main__":
    main()
