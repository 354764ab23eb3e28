"""Validation accuracy against training wall time, one line per run JSON of run_benchmarks.py.

    .venv/bin/python benchmarks/plot_curves.py \\
        benchmarks/results/runs/bioimlab-proxy-resnext-cbam-paper-s0-default.json \\
        benchmarks/results/runs/bioimlab-proxy-resnext-cbam-paper-s0-default-e105.json \\
        --out benchmarks/results/figures/training_curves.png --target 0.95 \\
        --title "Proxy-ResNeXt-CBAM from scratch, 64 px, 2 CPU cores, BioImLab paper split s0"
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run JSONs (benchmarks/results/runs/)")
    ap.add_argument("--out", type=Path, required=True, help="PNG to write")
    ap.add_argument("--target", type=float, help="draw this validation accuracy as a line")
    ap.add_argument("--title", default="Validation accuracy against training time")
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=150)
    for path in args.runs:
        run = json.loads(path.read_text(encoding="utf-8"))
        record = run["train"]
        curve = record["curve"]
        minutes = [p["seconds"] / 60 for p in curve]
        acc = [100 * p["val_accuracy"] for p in curve]
        label = (
            f"{record['recipe']['epochs']} epochs: best val {100 * record['val_accuracy']:.1f}% "
            f"(epoch {record['best_epoch']}), test {100 * run['accuracy']:.1f}%"
        )
        ax.plot(minutes, acc, marker=".", markersize=3, linewidth=1, label=label)
    if args.target is not None:
        ax.axhline(100 * args.target, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("training wall time (min)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_ylim(80, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(args.title)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
