"""Summarise benchmark run JSONs into benchmarks/results/table.md, beside the paper's numbers.

Runs are grouped by (dataset, split, network, preset, image size, epochs); each group shows
mean ± sample standard deviation over its seeds, in %, of accuracy, macro precision / recall
/ F1 and Recall@1/2/4/8, with the number of seeds, the training wall time per run and the
compute it ran on. Each network's row from the paper (MIDL 2020, Tables 3 and 4: BioImLab,
random image-level splits, mean over 100 splits, 224 px) sits above our rows for it.

    python benchmarks/make_table.py [--runs DIR] [--out FILE] [--readme README.md]

Below it, runs on the same seeds are compared seed by seed: networks (the paper's ordering,
CBAM > proxy > plain), and a run started from another checkpoint (`train --init`) against
the same run from scratch. --runs defaults to benchmarks/results/runs, --out to
benchmarks/results/table.md; --readme also replaces the tables in that file (each the block
of lines from its header row to the next line that is not a table row) with the new ones:
the results table always, the seed-by-seed table where the file has one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RUNS = HERE / "results" / "runs"
OUT = HERE / "results" / "table.md"

ARCH_ORDER = ("resnext", "proxy-resnext", "proxy-resnext-cbam")
ARCH_TITLE = {
    "resnext": "ResNeXt (CE)",
    "proxy-resnext": "Proxy-ResNeXt",
    "proxy-resnext-cbam": "Proxy-ResNeXt-CBAM",
}
METRICS = ("accuracy", "precision", "recall", "f1", "R@1", "R@2", "R@4", "R@8")
# The paper's Tables 3 and 4 (DESIGN.md), in %; None where the paper reports nothing.
PAPER: dict[str, tuple[float | None, ...]] = {
    "resnext": (90.22, 89.93, 88.91, 88.28, None, None, None, None),
    "proxy-resnext": (95.30, 95.29, 95.03, 95.02, 94.61, 96.22, 97.11, 97.98),
    "proxy-resnext-cbam": (95.86, 95.87, 95.90, 95.79, 94.78, 96.44, 97.36, 97.81),
}


def metric_values(r: dict[str, Any]) -> tuple[float, ...]:
    """The eight metrics of one run JSON, as fractions."""
    rak = r["recall_at_k"]
    return (
        r["accuracy"],
        r["precision"],
        r["recall"],
        r["f1"],
        rak["1"],
        rak["2"],
        rak["4"],
        rak["8"],
    )


def dataset_name(r: dict[str, Any]) -> str:
    run = r.get("run") or {}
    if run.get("dataset_name"):
        return str(run["dataset_name"])
    root = (r.get("dataset") or {}).get("root") or "?"
    return Path(str(root)).name


def epochs_of(r: dict[str, Any]) -> int | None:
    run, train = r.get("run") or {}, r.get("train") or {}
    if run.get("epochs_override") is not None:
        return int(run["epochs_override"])
    recipe = train.get("recipe") or {}
    return int(recipe["epochs"]) if recipe.get("epochs") is not None else None


def init_epochs(init: dict[str, Any]) -> str:
    """The epochs of a starting checkpoint, stage by stage where it went on from an earlier
    stage of its own dataset, split and seed ("21+6": 21 epochs, then 6 more)."""
    stages = []
    node: dict[str, Any] | None = init
    while node:
        stages.append(str((node.get("recipe") or {}).get("epochs", "?")))
        parent = node.get("init")
        same = isinstance(parent, dict) and all(
            parent.get(key) == node.get(key) for key in ("dataset", "split", "seed")
        )
        node = parent if same else None
    return "+".join(reversed(stages))


def preset_of(r: dict[str, Any]) -> str:
    """The preset, the preprocessing its crops were made with where it is not the first
    (`data.image.PREPROCESS_VERSION`; runs before it was recorded are v1), and the checkpoint
    the run started from (`train --init`): its dataset, split, seed and epochs, and the recipe
    fields the run changed (`run_benchmarks.py --set`) and a second dataset it trained on
    jointly (`--also`), so that runs from different starting points, pipelines, recipes or
    data are not averaged."""
    preset = str(r.get("preset") or "?")
    version = int(r.get("preprocess_version") or 1)
    if version != 1:
        preset += f", crops v{version}"
    init = (r.get("train") or {}).get("init")
    if init:
        epochs = (init.get("recipe") or {}).get("epochs")
        source = Path(str(init.get("dataset") or "?")).name
        start = (source, init.get("split"), init.get("seed"))
        if start == (dataset_name(r), r.get("split"), r.get("seed")):
            # a recipe in stages: each seed goes on from its own first stage, so seeds group
            preset += ", from the same split and seed"
        else:
            preset += f", from {source} {init.get('split', '?')} s{init.get('seed', '?')}"
        preset += f" e{init_epochs(init)}" if epochs is not None else ""
    overrides = (r.get("run") or {}).get("recipe_overrides") or {}
    preset += "".join(f", {key}={value}" for key, value in sorted(overrides.items()))
    also = (r.get("train") or {}).get("also")  # a second dataset trained on jointly
    if also:
        name = Path(str(also.get("dataset") or "?")).name
        preset += f", with {name} {also.get('split', '?')} s{also.get('seed', '?')}"
    return preset


def group_key(r: dict[str, Any]) -> tuple[Any, ...]:
    return (
        dataset_name(r),
        r["split"],
        r["arch"],
        preset_of(r),
        r["image_size"],
        epochs_of(r),
    )


def load_runs(folder: Path) -> list[dict[str, Any]]:
    """Every run JSON in `folder` (files that are not bench results are skipped with a note)."""
    runs = []
    for path in sorted(folder.glob("*.json")):
        try:
            r = json.loads(path.read_text(encoding="utf-8"))
            metric_values(r)
            group_key(r)
        except (OSError, ValueError, KeyError, TypeError) as err:
            print(f"skipping {path}: {type(err).__name__} {err}", file=sys.stderr)
            continue
        runs.append(r)
    return runs


def mean_std(values: Iterable[float]) -> str:
    """'95.30 ± 0.42' in % (sample std over seeds); just the mean for a single seed."""
    v = [100.0 * x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return ""
    if len(v) == 1:
        return f"{v[0]:.2f}"
    return f"{statistics.mean(v):.2f} ± {statistics.stdev(v):.2f}"


def train_minutes(r: dict[str, Any]) -> float | None:
    seconds = r.get("train_seconds")
    if seconds is None:
        seconds = (r.get("run") or {}).get("train_wall_seconds")
    return None if seconds is None else float(seconds) / 60.0


def compute(runs: list[dict[str, Any]]) -> str:
    names = set()
    for r in runs:
        train = r.get("train") or {}
        device = r.get("train_device") or train.get("device") or "?"
        label = "GPU" if device == "cuda" else "CPU" if device == "cpu" else str(device)
        if train.get("device_name"):
            label += f" ({train['device_name']})"
        if train.get("cpu_capability"):
            label += f", {train['cpu_capability']}"
        if train.get("threads"):
            label += f", {train['threads']} thread{'s' if train['threads'] > 1 else ''}"
        if "autocast" in train:
            label += f", {train['autocast'] or 'fp32'}"
        names.add(label)
    return "; ".join(sorted(names))


HEADER = (
    "| dataset | split | network | preset | px | epochs | seeds "
    "| accuracy | precision | recall | F1 | R@1 | R@2 | R@4 | R@8 | train min/run | compute |"
)


def paper_row(arch: str) -> str:
    cells = ["" if v is None else f"{v:.2f}" for v in PAPER[arch]]
    return (
        f"| *BioImLab (paper)* | *paper* | *{ARCH_TITLE[arch]}* | *paper* | *224* | "
        "| *100 splits* | " + " | ".join(f"*{c}*" if c else "" for c in cells) + " | | |"
    )


def our_row(key: tuple[Any, ...], runs: list[dict[str, Any]]) -> str:
    dataset, split, arch, preset, px, epochs = key
    columns = list(zip(*(metric_values(r) for r in runs), strict=True))
    seeds = sorted({r["seed"] for r in runs})
    minutes = [m for m in (train_minutes(r) for r in runs) if m is not None]
    wall = f"{statistics.mean(minutes):.1f}" if minutes else ""
    cells = [
        dataset,
        split,
        ARCH_TITLE.get(arch, arch),
        str(preset),
        str(px),
        "" if epochs is None else str(epochs),
        str(len(seeds)),
    ]
    cells += [mean_std(c) for c in columns]
    audited = [r.get("audited") for r in runs]  # the label-contradicted cells left out
    if all(audited):
        cells[7] += f" (audited {mean_std(a['accuracy'] for a in audited)})"
        cells[11] += f" (audited {mean_std(a['recall_at_k']['1'] for a in audited)})"
    cells += [wall, compute(runs)]
    return "| " + " | ".join(cells) + " |"


def render(runs: list[dict[str, Any]]) -> str:
    """The markdown table: per network, the paper's row, then ours grouped and averaged."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        groups[group_key(r)].append(r)
    archs = [a for a in ARCH_ORDER if a in PAPER] + sorted({k[2] for k in groups} - set(ARCH_ORDER))
    lines = [
        "# Benchmark results",
        "",
        "Mean ± sample standard deviation over seeds, in %. Accuracy over test images; precision,",
        "recall and F1 are macro averages over classes; Recall@K is the share of test queries with",
        "a same-class image among their K nearest other test images (not the information-retrieval",
        "recall). `paper` split: random over images in the paper's 4176/360/720 proportions;",
        "`cell` split: grouped by patient (else cell), so no cell is on both sides; `karyo`",
        "split: grouped by patient, every patient with an abnormal cell on the test side (a",
        "harder test set). Rows in *italics* are the paper's (MIDL 2020, Tables 3 and 4;",
        "BioImLab, 100 random image-level splits, 224 px). Train min/run is wall time.",
        '"Audited" (where every run of a row measured it): without the three gband612 cells',
        "whose labels their own images contradict (the ground-truth ruling's headline figure).",
        "",
        HEADER,
        "|" + "---|" * HEADER.count(" | ") + "---|",
    ]
    for arch in archs:
        if arch in PAPER:
            lines.append(paper_row(arch))
        for key in sorted((k for k in groups if k[2] == arch), key=lambda k: tuple(map(str, k))):
            lines.append(our_row(key, groups[key]))
    lines += ["", f"{len(runs)} run(s) in {len(groups)} group(s)."]
    lines += paired_table(groups)
    return "\n".join(lines) + "\n"


# The paper's ordering, CBAM > proxy > plain, tested pair by pair on the seeds both networks
# ran: a seed fixes the split and the initialisation, so the two runs see the same test set.
PAIRS = (
    ("proxy-resnext-cbam", "proxy-resnext"),
    ("proxy-resnext", "resnext"),
    ("proxy-resnext-cbam", "resnext"),
)
PAIRED_HEADER = (
    "| dataset | split | px | epochs | comparison | seeds "
    "| Δ accuracy | Δ R@1 | accuracy higher on |"
)


def paired_differences(
    first: list[dict[str, Any]], second: list[dict[str, Any]]
) -> tuple[list[int], list[float], list[float]]:
    """Seeds both lists of runs hold, and per seed first minus second in accuracy and R@1."""
    a, b = {r["seed"]: r for r in first}, {r["seed"]: r for r in second}
    seeds = sorted(set(a) & set(b))
    d_acc = [a[s]["accuracy"] - b[s]["accuracy"] for s in seeds]
    d_r1 = [a[s]["recall_at_k"]["1"] - b[s]["recall_at_k"]["1"] for s in seeds]
    return seeds, d_acc, d_r1


def comparisons(
    groups: dict[tuple[Any, ...], list[dict[str, Any]]],
) -> list[tuple[tuple[Any, ...], tuple[Any, ...], str]]:
    """(first group, second group, label) for every pair the seed-by-seed table compares: the
    pairs of the paper's ordering under the same settings, and each run started from another
    checkpoint (`train --init`) against the same run from scratch."""
    pairs = []
    settings = sorted({(k[0], k[1], k[3], k[4], k[5]) for k in groups}, key=lambda k: str(k))
    for dataset, split, preset, px, epochs in settings:
        for better, worse in PAIRS:
            pairs.append(
                (
                    (dataset, split, better, preset, px, epochs),
                    (dataset, split, worse, preset, px, epochs),
                    f"{ARCH_TITLE[better]} - {ARCH_TITLE[worse]}",
                )
            )
    for key in sorted(groups, key=lambda k: tuple(map(str, k))):
        preset, _, source = key[3].partition(", from ")
        if source:
            title = ARCH_TITLE.get(key[2], key[2])
            scratch = (*key[:3], preset, *key[4:])
            pairs.append((key, scratch, f"{title} from {source} - from scratch"))
    return pairs


def paired_table(groups: dict[tuple[Any, ...], list[dict[str, Any]]]) -> list[str]:
    """Lines of a table comparing groups of runs (`group_key`) on the seeds both ran, for
    the pairs of `comparisons`; none where no pair shares two seeds."""
    rows = []
    for first_key, second_key, label in comparisons(groups):
        seeds, d_acc, d_r1 = paired_differences(
            groups.get(first_key, []), groups.get(second_key, [])
        )
        if len(seeds) < 2:
            continue
        dataset, split, _, _, px, epochs = first_key
        wins = sum(d > 0 for d in d_acc)
        rows.append(
            f"| {dataset} | {split} | {px} | {'' if epochs is None else epochs} "
            f"| {label} | {len(seeds)} "
            f"| {mean_std(d_acc)} | {mean_std(d_r1)} | {wins} of {len(seeds)} seeds |"
        )
    if not rows:
        return []
    return [
        "",
        "## Seed by seed",
        "",
        "Differences in points (first minus second) over the seeds both ran with the same",
        "settings; one seed fixes the split (and, from scratch, the initialisation).",
        "",
        PAIRED_HEADER,
        "|" + "---|" * PAIRED_HEADER.count(" | ") + "---|",
        *rows,
    ]


def replace_table(document: str, table: str, header: str = HEADER) -> str:
    """`document` with its table that starts at `header` (to the last row after it) replaced
    by the rows of the table that starts at `header` in `table`; ValueError if the document
    has no such table."""

    def block(lines: list[str]) -> tuple[int, int]:
        start = next(i for i, line in enumerate(lines) if line.rstrip("\n") == header)
        end = start
        while end < len(lines) and lines[end].startswith("|"):
            end += 1
        return start, end

    new = table.splitlines()
    start, end = block(new)
    rows = new[start:end]
    lines = document.splitlines(keepends=True)
    try:
        start, end = block(lines)
    except StopIteration:
        raise ValueError("no results table (its header row) in the document") from None
    return "".join(lines[:start] + [r + "\n" for r in rows] + lines[end:])


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=Path, default=RUNS, help="folder of run JSONs")
    ap.add_argument("--out", type=Path, default=OUT, help="markdown file to write")
    ap.add_argument("--readme", type=Path, default=None, help="also update the table in it")
    args = ap.parse_args(argv)
    if not args.runs.is_dir():
        print(f"error: {args.runs}: no such folder of run JSONs", file=sys.stderr)
        return 1
    runs = load_runs(args.runs)
    text = render(runs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out, text)
    print(f"{len(runs)} run(s) -> {args.out}")
    if args.readme is not None:
        try:
            document = replace_table(args.readme.read_text("utf-8"), text)
            if PAIRED_HEADER in text and PAIRED_HEADER in document:
                document = replace_table(document, text, PAIRED_HEADER)
            write_atomic(args.readme, document)
        except (OSError, ValueError) as err:
            print(f"error: {args.readme}: {err}", file=sys.stderr)
            return 1
        print(f"table replaced in {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
