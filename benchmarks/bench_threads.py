"""Queries under load: OpenMP wait policy and torch threads, idle and beside a busy process.

torch and faiss-cpu each ship their own OpenMP runtime (two libgomp copies). By default a
libgomp worker spins for a while after each parallel region, waiting for more work; two
runtimes in one process, or one beside another busy process, then burn the cores the
other needs. This benchmark runs the pattern that `query`, `karyotype` and a server use:
in one process, one query at a time (load, prepare, embed, search, rows:
`SearchIndex.query_images`), then 64-image batches, against a real index of the BioImLab
images, for each setting:

- `OMP_WAIT_POLICY` unset (libgomp's default: spin, then sleep) or `PASSIVE` (sleep at once);
- torch intra-op threads 1 or 2;

each once on idle cores and once beside one competing CPU-bound process (a Python busy
loop: one core's worth of work). Each setting runs in a fresh process, since the wait
policy is read when the OpenMP runtime starts. The unset rows import torch and faiss before
karyosearch (karyosearch sets the policy on import, so that is the only way to get the old
behaviour back).

    .venv/bin/python benchmarks/bench_threads.py                # ~4 min on 2 cores
    .venv/bin/python benchmarks/bench_threads.py --queries 50   # quicker look

Each run is appended to the JSON's `repeats` (with `--note`: what else ran meanwhile).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SETTINGS = [  # (name, OMP_WAIT_POLICY or None for unset, torch threads)
    ("spin (unset), 2 threads", None, 2),
    ("spin (unset), 1 thread", None, 1),
    ("passive, 2 threads", "PASSIVE", 2),
    ("passive, 1 thread", "PASSIVE", 1),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / ".." / "shared" / "data" / "bioimlab")
    parser.add_argument(
        "--model", type=Path, default=None, help="encoder (default: the shipped Q-band one)"
    )
    parser.add_argument(
        "--index",
        type=Path,
        default=Path("/tmp/karyosearch-bench-threads-index"),
        help="index folder to build (once) and query",
    )
    parser.add_argument("--queries", type=int, default=200, help="single-image queries per run")
    parser.add_argument("--batches", type=int, default=10, help="64-image batch queries per run")
    parser.add_argument(
        "--json-out", type=Path, default=REPO / "benchmarks" / "results" / "threads.json"
    )
    parser.add_argument(
        "--note", default="", help="what else ran on the machine (saved with the figures)"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def query_images(args: argparse.Namespace) -> list[str]:
    """A fixed, spread sample of the dataset's image files (every 17th)."""
    from karyosearch.data.datasets import read_dataset

    items = read_dataset(args.data).items
    return [str(it.path) for it in items[:: max(1, len(items) // 400)]]


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One setting: time single queries and batches in this process; print JSON."""
    if "OMP_WAIT_POLICY" not in os.environ:  # the old behaviour: runtimes start before ours
        import faiss  # noqa: F401
        import torch  # noqa: F401
    import torch

    from karyosearch.search.engine import SearchIndex

    torch.set_num_threads(args.threads)
    search = SearchIndex.open(args.index, args.model)
    paths = query_images(args)
    search.query_images(paths[:2], k=8)  # warm-up: first forward, page cache
    single = []
    for i in range(args.queries):
        t0 = time.perf_counter()
        search.query_images([paths[i % len(paths)]], k=8)
        single.append(time.perf_counter() - t0)
    batch = []
    for i in range(args.batches):
        chunk = [paths[(i * 64 + j) % len(paths)] for j in range(64)]
        t0 = time.perf_counter()
        search.query_images(chunk, k=8)
        batch.append(time.perf_counter() - t0)
    single_ms = sorted(s * 1000 for s in single)
    return {
        "single_ms_median": statistics.median(single_ms),
        "single_ms_p99": single_ms[min(len(single_ms) - 1, int(0.99 * len(single_ms)))],
        "batch64_s_median": statistics.median(batch),
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }


def busy_loop() -> subprocess.Popen:
    """One CPU-bound competitor: a pure-Python loop (one core's worth of work)."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def run_setting(args: argparse.Namespace, policy: str | None, threads: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    cmd = [sys.executable, __file__, "--child", "--threads", str(threads),
           "--data", str(args.data), "--model", str(args.model), "--index", str(args.index),
           "--queries", str(args.queries), "--batches", str(args.batches)]  # fmt: skip
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return
    from record import shipped_model

    from karyosearch.search.update import build_or_update
    from karyosearch.util.runtime import describe

    args.model = args.model or shipped_model()

    if not args.index.exists():
        print(f"building {args.index} from {args.data} ...", flush=True)
        build_or_update(args.index, args.data, args.model)
    results = []
    for name, policy, threads in SETTINGS:
        row: dict[str, Any] = {"setting": name, "omp_wait_policy": policy, "threads": threads}
        row["idle"] = run_setting(args, policy, threads)
        competitor = busy_loop()
        try:
            time.sleep(1.0)
            row["beside_one_busy_process"] = run_setting(args, policy, threads)
        finally:
            competitor.kill()
            competitor.wait()
        idle, busy = row["idle"], row["beside_one_busy_process"]
        row["slowdown_single_median"] = busy["single_ms_median"] / idle["single_ms_median"]
        row["slowdown_batch64"] = busy["batch64_s_median"] / idle["batch64_s_median"]
        results.append(row)
        print(
            f"{name:26s} idle: {idle['single_ms_median']:6.1f} ms (p99 "
            f"{idle['single_ms_p99']:6.1f}), batch {idle['batch64_s_median']:5.2f} s | busy: "
            f"{busy['single_ms_median']:6.1f} ms (p99 {busy['single_ms_p99']:6.1f}), batch "
            f"{busy['batch64_s_median']:5.2f} s | slowdown {row['slowdown_single_median']:.2f}x "
            f"/ {row['slowdown_batch64']:.2f}x",
            flush=True,
        )
    from karyosearch.search.engine import SearchIndex

    record = {
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
        "conditions": args.note,
        "model": str(args.model),
        "index_images": len(SearchIndex.open(args.index)),
        "queries": args.queries,
        "batches_of_64": args.batches,
        "machine": describe(),
        "results": results,
    }
    saved = json.loads(args.json_out.read_text()) if args.json_out.exists() else {}
    repeats = saved.get("repeats", []) + [record]  # each run is kept: the figures are noisy
    out = {"benchmark": "threads", "command": " ".join(sys.argv), "repeats": repeats}
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"saved {args.json_out}")


if __name__ == "__main__":
    main()
