"""Write cost of an index held as segments: adding one cell (46 crops) to an archive of
200k and 1M vectors, removing them again, and merging.

Synthetic 2048-d float32 unit vectors (the cost of a write depends on sizes, not on what
the vectors mean; search quality is `bench_index.py`'s business). The archive is built in
segments of `--segment-rows` vectors, generated chunk by chunk, so the machine never holds
the whole archive in memory (1M x 2048 float32 is 8 GiB for the vectors alone, held twice
while a single segment is built); every segment is FAISS `Flat` (exact). Then, `--repeats`
times each:

- append: what `index` does after embedding: read the index's rows for the write (the
  manifest, the stores' metadata and tombstones; no FAISS file, no vector), then write the
  46 vectors as a new segment (FAISS file, HDF5 rows, fsync, manifest rename, fsync);
- remove: tombstone those 46 ids (what `remove` writes);
- merge: of the small segments the appends made (what the automatic merge does), and, where
  the archive fits in memory twice (`--full-merge-max`, 200k by default), of everything
  (`index --merge`), checking that the neighbours of 20 queries are the same before and after.

    .venv/bin/python benchmarks/bench_segments.py                     # 200k and 1M, ~10 min
    .venv/bin/python benchmarks/bench_segments.py --sizes 20000       # a quick look

Saves benchmarks/results/segments.json with the machine (`runtime.describe()`) and `uptime`
before and after (other work on the cores and the disk slows every figure).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CELL = 46


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="200000,1000000", help="archive sizes, comma-separated")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--segment-rows", type=int, default=100_000, help="rows per built segment")
    parser.add_argument("--repeats", type=int, default=5, help="appends (and removes) per size")
    parser.add_argument("--full-merge-max", type=int, default=200_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/karyosearch-bench-segments"))
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks/results/segments.json")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def unit_rows(first_id: int, n: int, dim: int, rng: np.random.Generator) -> Any:
    from karyosearch.search.store import Rows

    x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    return Rows(
        ids,
        x,
        (ids % 24).astype(np.int8),
        [f"/archive/cell{i // CELL}/crop{i % CELL}.png" for i in ids],
        [f"cell{i // CELL}" for i in ids],
        [""] * n,
        ["0" * 40] * n,
    )


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def one_size(n: int, args: argparse.Namespace) -> dict[str, Any]:
    from karyosearch.search.folder import IndexCard, read_index_folder, writer_lock
    from karyosearch.search.segments import (
        merge_segments,
        new_segment_index,
        write_generation,
        write_index_folder,
    )

    rng = np.random.default_rng(args.seed)
    path = args.workdir / f"archive-{n}"
    shutil.rmtree(path, ignore_errors=True)
    card = IndexCard("synthetic", "proxy-resnext-cbam", 64, 1, dimension=args.dim)
    from karyosearch.data.image import PREPROCESS_VERSION

    card.preprocess_version = PREPROCESS_VERSION
    start = time.perf_counter()
    made = 0
    while made < n:
        rows = unit_rows(made, min(args.segment_rows, n - made), args.dim, rng)
        index = new_segment_index("Flat", rows)
        if made == 0:
            write_index_folder(path, card, index, rows)
        else:
            with writer_lock(path):
                base = read_index_folder(path, with_faiss=False).card
                write_generation(path, base, [(index, rows)])
        made += len(rows)
        del rows, index
        log(f"  {n}: built {made} rows")
    build_s = time.perf_counter() - start
    disk = folder_bytes(path)

    appends, reads, writes, removes = [], [], [], []
    next_id = n
    for r in range(args.repeats):
        rows = unit_rows(next_id, CELL, args.dim, rng)
        next_id += CELL
        t0 = time.perf_counter()
        with writer_lock(path):
            folder = read_index_folder(path, with_faiss=False)  # what update.py reads
            t1 = time.perf_counter()
            write_generation(path, folder.card, [(new_segment_index("Flat", rows), rows)])
        t2 = time.perf_counter()
        reads.append(t1 - t0)
        writes.append(t2 - t1)
        appends.append(t2 - t0)
        if r % 2:  # remove every other cell again: tombstones
            t0 = time.perf_counter()
            with writer_lock(path):
                folder = read_index_folder(path, with_faiss=False)
                seg = folder.segments[-1]
                write_generation(path, folder.card, delete={seg.name: rows.ids})
            removes.append(time.perf_counter() - t0)
        log(f"  {n}: append {appends[-1]:.2f} s (read {reads[-1]:.2f} + write {writes[-1]:.2f})")

    # the small segments the appends made, merged (the automatic merge's work)
    t0 = time.perf_counter()
    with writer_lock(path):
        folder = read_index_folder(path, with_faiss=False)
        small = [s.name for s in folder.segments if s.info["count"] <= CELL]
        merge_segments(folder, small)
    tail_merge_s = time.perf_counter() - t0
    result: dict[str, Any] = {
        "vectors": n,
        "segments_built": -(-n // args.segment_rows),
        "segment_rows": args.segment_rows,
        "factory": "Flat",
        "build_s": round(build_s, 1),
        "disk_bytes_per_vector": round(disk / n, 1),
        "append_46_s": {
            "median": round(statistics.median(appends), 3),
            "max": round(max(appends), 3),
            "read_rows_median": round(statistics.median(reads), 3),
            "write_segment_median": round(statistics.median(writes), 3),
            "all": [round(x, 3) for x in appends],
        },
        "remove_46_s": {
            "median": round(statistics.median(removes), 3) if removes else None,
            "all": [round(x, 3) for x in removes],
        },
        "tail_merge": {"segments": len(small), "seconds": round(tail_merge_s, 3)},
    }
    if n <= args.full_merge_max:
        queries = unit_rows(0, 20, args.dim, rng).embeddings
        before = read_index_folder(path)
        t0 = time.perf_counter()
        _, ids_before = before.search(queries, 10)
        query_s = (time.perf_counter() - t0) / len(queries)
        segments_before = len(before.segments)
        del before
        t0 = time.perf_counter()
        with writer_lock(path):
            merge_segments(read_index_folder(path, with_faiss=False))
        merge_s = time.perf_counter() - t0
        after = read_index_folder(path)
        _, ids_after = after.search(queries, 10)
        result["full_merge"] = {
            "segments_before": segments_before,
            "seconds": round(merge_s, 1),
            "same_neighbours": bool(np.array_equal(ids_before, ids_after)),
        }
        result["flat_query_ms_batched_20"] = round(1000 * query_s, 2)
    else:
        result["full_merge"] = (
            f"not run: {n} x {args.dim} float32 is {n * args.dim * 4 / 2**30:.1f} GiB, held "
            "twice while one segment is built; more than this machine's memory allows"
        )
    shutil.rmtree(path, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from karyosearch.util.runtime import describe

    args.workdir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "what": "adding one cell (46 vectors) to a segmented index, removing it, merging",
        "machine": describe(),
        "uptime_before": uptime(),
        "seed": args.seed,
        "workdir": str(args.workdir),
        "sizes": [],
    }
    for n in (int(s) for s in args.sizes.split(",")):
        log(f"archive of {n} vectors")
        record["sizes"].append(one_size(n, args))
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record["uptime_after"] = uptime()
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record["sizes"], indent=2))


if __name__ == "__main__":
    main()
