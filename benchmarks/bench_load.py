"""Throughput of the image pipeline: `load` + `prepare` in images per second.

For each real dataset (BioImLab BMPs, G-band TIFFs) a seeded sample of images is read with
`load_prepared` once untimed (to warm the page cache: this measures decoding, not the disk),
then `--repeats` times in one thread and `--repeats` times with a 2-thread pool. The median
of the repeats is reported and saved as JSON with the machine, versions, date and settings.

    .venv/bin/python benchmarks/bench_load.py              # ~1-2 min on 2 cores
    .venv/bin/python benchmarks/bench_load.py --limit 0    # every image (~5 min)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import PIL

from karyosearch.data.datasets import read_dataset
from karyosearch.data.image import PREPROCESS_VERSION, load_prepared
from karyosearch.util.runtime import describe

REPO = Path(__file__).resolve().parents[1]
DATASETS = ("bioimlab", "gband612")
THREADS = 2


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=REPO / ".." / "shared" / "data",
        help="folder holding bioimlab/ and gband612/ (default ../shared/data beside the repo)",
    )
    parser.add_argument("--size", type=int, default=64, help="prepare() output side, px")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per setting")
    parser.add_argument(
        "--limit",
        type=int,
        default=4000,
        help="images per dataset, a seeded random sample; 0 for every image",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample")
    parser.add_argument(
        "--json-out",
        type=Path,
        default=REPO / "benchmarks" / "results" / "load.json",
        help="where to save the results",
    )
    return parser.parse_args(argv)


def machine() -> dict[str, Any]:
    return {**describe(), "pillow": PIL.__version__}


def sample(paths: list[str], limit: int, seed: int) -> list[str]:
    if limit <= 0 or limit >= len(paths):
        return paths
    pick = np.random.default_rng(seed).choice(len(paths), size=limit, replace=False)
    return [paths[i] for i in np.sort(pick)]


def run_serial(paths: list[str], size: int) -> None:
    for p in paths:
        load_prepared(p, size)


def run_pool(paths: list[str], size: int) -> None:
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        for _ in pool.map(lambda p: load_prepared(p, size), paths):
            pass


def time_it(
    fn: Callable[[list[str], int], None], paths: list[str], size: int, repeats: int
) -> dict[str, Any]:
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(paths, size)
        rates.append(len(paths) / (time.perf_counter() - start))
    return {
        "images_per_s": round(statistics.median(rates), 1),
        "runs_images_per_s": [round(r, 1) for r in rates],
    }


def bench_dataset(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    dataset = read_dataset(root)
    paths = sample([it.path for it in dataset.items], args.limit, args.seed)
    run_serial(paths, args.size)  # warm-up: page cache, lazy imports
    single = time_it(run_serial, paths, args.size, args.repeats)
    pooled = time_it(run_pool, paths, args.size, args.repeats)
    return {
        "layout": dataset.layout,
        "images_in_dataset": len(dataset),
        "images_timed": len(paths),
        "single_thread": single,
        f"pool_{THREADS}_threads": pooled,
        "pool_speedup": round(pooled["images_per_s"] / single["images_per_s"], 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    data = args.data.resolve()
    missing = [name for name in DATASETS if not (data / name).is_dir()]
    if missing:
        print(f"error: {data} lacks {', '.join(missing)} (pass --data)", file=sys.stderr)
        return 1
    report: dict[str, Any] = {
        "benchmark": "load+prepare",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {
            "data": str(data),
            "size": args.size,
            "repeats": args.repeats,
            "limit": args.limit,
            "seed": args.seed,
            "threads": THREADS,
            "preprocess_version": PREPROCESS_VERSION,
            "statistic": "median of repeats, after one untimed warm-up pass",
        },
        "results": {},
    }
    for name in DATASETS:
        result = bench_dataset(data / name, args)
        report["results"][name] = result
        print(
            f"{name:9s} {result['images_timed']:6d} images  "
            f"1 thread {result['single_thread']['images_per_s']:8.1f} img/s  "
            f"{THREADS} threads {result[f'pool_{THREADS}_threads']['images_per_s']:8.1f} img/s  "
            f"(x{result['pool_speedup']})"
        )
    report["machine"]["load_average_after"] = (
        list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    )
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
