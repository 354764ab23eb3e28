"""Index and query speed, and approximate-search recall, in one run.

1. Real data (BioImLab, 5,474 images with --limit 0): indexing throughput of
   `engine.build_or_update` into a fresh index (images/s over the whole call: hashing,
   loading, embedding, writing), the in-process latency of `SearchIndex.query_images` for
   one image (median and p99), the bytes per stored image (FAISS file and HDF5 store), and
   the wall time of one cold `karyosearch query --json` command in a subprocess (Python
   start, imports, checkpoint and index load, one embedding, search).
2. Synthetic scale (N unit vectors of 2048-d, 1,000,000 by default; 8 GB as float32): for
   each FAISS factory string (Flat, HNSW32, IVF4096,PQ64, IVF4096,SQ8 by default; inner product,
   wrapped in IDMap2 as karyosearch stores them) the build time, bytes per stored vector
   (serialised index size / N), single-query latency (median, p99), batch throughput, and
   recall@10 against exact search (the share of the exact top-10 ids that the index
   returns in its top-10: the ANN-benchmark recall, not the paper's Recall@K), with a
   sweep of nprobe (IVF) or efSearch (HNSW).

   The vectors are clustered like chromosome embeddings: 24 class centres, 64 sub-centres
   per class (cells, patients), points around them (cosine to their sub-centre about 0.75);
   queries come from the same distribution but are not in the index. Uniform random
   vectors in 2048-d would have no neighbours worth finding and flatter every ANN index.
   Vectors are generated chunk by chunk into the index, so memory peaks at one index
   (8 GB for Flat at 1M) plus one chunk; indexes are built one after another.

    .venv/bin/python benchmarks/bench_index.py --model runs/best/model.pt   # full: hours on 2 cores
    .venv/bin/python benchmarks/bench_index.py --quick                      # smoke: ~2 min

On a machine shared with other jobs, libgomp's default active waiting can make FAISS
training many times slower (PQ64 codebooks on 10k vectors of 2048-d: 104 s, against 8 s
with OMP_WAIT_POLICY=PASSIVE or one thread, on the 2-core development box while it was
training a model); the JSON records the load average and OMP_WAIT_POLICY. Run the full
benchmark on an otherwise idle machine.

Without --model a random-weight encoder is used (fine for speed, meaningless for labels);
the JSON says so. Results: benchmarks/results/index.json (--quick: index_quick.json).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DIM = 2048


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="checkpoint to embed with (default: random)")
    parser.add_argument(
        "--data",
        type=Path,
        default=REPO / ".." / "shared" / "data" / "bioimlab",
        help="labelled dataset to index (default ../shared/data/bioimlab)",
    )
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--limit", type=int, help="real images to index, 0 = all (default all)")
    parser.add_argument("--n", type=int, help="synthetic vectors (default 1,000,000)")
    parser.add_argument("--nq", type=int, help="synthetic queries (default 1000)")
    parser.add_argument(
        "--factories",
        help="comma-separated list with ';' between factories "
        "(default 'Flat;HNSW32;IVF4096,PQ64;IVF4096,SQ8'); Flat always runs first, as ground truth",
    )
    parser.add_argument("--ivf-train", type=int, help="vectors to train IVF/PQ (default 160k)")
    parser.add_argument("--repeats", type=int, help="repeats of the timed runs (default 3)")
    parser.add_argument("--latency-queries", type=int, help="single queries timed (default 200)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-real", action="store_true", help="only the synthetic part")
    parser.add_argument("--skip-synthetic", action="store_true", help="only the real-data part")
    parser.add_argument("--tmp", type=Path, help="scratch folder (default: system temp)")
    parser.add_argument("--json-out", type=Path, help="where to save the results")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "limit": 200 if quick else 0,
        "n": 20_000 if quick else 1_000_000,
        "nq": 100 if quick else 1000,
        "factories": (
            "Flat;HNSW32;IVF64,PQ64;IVF64,SQ8" if quick else "Flat;HNSW32;IVF4096,PQ64;IVF4096,SQ8"
        ),
        "ivf_train": 10_000 if quick else 160_000,
        "repeats": 1 if quick else 3,
        "latency_queries": 50 if quick else 200,
        "json_out": REPO
        / "benchmarks"
        / "results"
        / ("index_quick.json" if quick else "index.json"),
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def machine() -> dict[str, Any]:
    import faiss
    import h5py

    import karyosearch
    from karyosearch.util.runtime import describe

    return {
        **describe(),
        "memory_gb": _memory_gb(),
        "faiss": faiss.__version__,
        "faiss_omp_threads": faiss.omp_get_max_threads(),
        "h5py": h5py.__version__,
        "karyosearch": karyosearch.__version__,
        "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")},
    }


def _memory_gb() -> float | None:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        return round(pages * size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def ms_stats(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {
        "median_ms": round(float(np.median(ms)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "n": len(ms),
    }


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- real data -----------------------------------------------------------------------------


def random_checkpoint(folder: Path, quick: bool) -> Path:
    import torch

    from karyosearch.model.checkpoint import save_checkpoint
    from karyosearch.model.encoder import EncoderConfig, build_encoder

    torch.manual_seed(0)
    cfg = EncoderConfig(image_size=32, stem="standard") if quick else EncoderConfig()
    path = folder / "random.pt"
    save_checkpoint(path, build_encoder(cfg))
    return path


def cli_command() -> list[str]:
    script = Path(sys.executable).with_name("karyosearch")
    return [str(script)] if script.exists() else [sys.executable, "-m", "karyosearch.cli"]


def bench_real(args: argparse.Namespace, model: Path, tmp: Path) -> dict[str, Any]:
    from karyosearch.data.datasets import Dataset, read_dataset
    from karyosearch.model.checkpoint import read_checkpoint
    from karyosearch.search.engine import SearchIndex
    from karyosearch.search.update import build_or_update

    dataset = read_dataset(args.data)
    items = dataset.items
    if args.limit and args.limit < len(items):
        pick = np.sort(np.random.default_rng(args.seed).choice(len(items), args.limit, False))
        items = [items[i] for i in pick]
    subset = Dataset(dataset.root, dataset.layout, items, dataset.rejected)
    ckpt = read_checkpoint(model)

    runs, reports = [], []
    index_dir = tmp / "real-index"
    for r in range(args.repeats):
        shutil.rmtree(index_dir, ignore_errors=True)
        start = time.perf_counter()
        report = build_or_update(index_dir, subset, model, batch_size=args.batch_size)
        wall = time.perf_counter() - start
        runs.append(report.count / wall)
        reports.append(report)
        log(
            f"index run {r + 1}: {report.count} images in {wall:.1f} s "
            f"({report.count / wall:.1f} img/s; embedding alone {report.images_per_s} img/s)"
        )
    report = reports[-1]

    search = SearchIndex.open(index_dir)
    rng = np.random.default_rng(args.seed + 1)
    queries = [
        items[i].path
        for i in rng.choice(len(items), min(args.latency_queries, len(items)), replace=False)
    ]
    search.query_images(queries[:1], k=8)  # warm-up: encoder load, first-call allocations
    latencies, self_first = [], 0
    for q in queries:
        start = time.perf_counter()
        result = search.query_images([q], k=8)[0]
        latencies.append(time.perf_counter() - start)
        self_first += result.neighbours[0].path == str(Path(q).resolve())
    log(f"query latency over {len(queries)} images: median {np.median(latencies) * 1000:.1f} ms")

    cold = []
    command = cli_command() + ["query", queries[0], "--index", str(index_dir), "-k", "8", "--json"]
    for _ in range(args.repeats):
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        cold.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise RuntimeError(f"karyosearch query failed: {done.stderr.strip()}")
        json.loads(done.stdout)
    log(f"cold `karyosearch query`: median {statistics.median(cold):.2f} s")

    segments = json.loads((index_dir / "card.json").read_text())["segments"]
    faiss_bytes = sum((index_dir / s["faiss"]).stat().st_size for s in segments)
    store_bytes = sum((index_dir / s["store"]).stat().st_size for s in segments)
    return {
        "data": str(dataset.root),
        "images_in_dataset": len(dataset),
        "images_indexed": report.count,
        "rejected": len(report.rejected),
        "factory": report.factory,
        "model": {
            "path": str(model),
            "arch": ckpt.config.arch,
            "image_size": ckpt.config.image_size,
            "stem": ckpt.config.stem,
            "fingerprint": ckpt.fingerprint,
            "random_weights": args.model is None,
        },
        "indexing": {
            "images_per_s": round(statistics.median(runs), 2),
            "runs_images_per_s": [round(x, 2) for x in runs],
            "embedding_only_images_per_s": [r.images_per_s for r in reports],
            "what": "build_or_update into a fresh folder: hash, load, prepare, embed, write",
        },
        "query_one_image_in_process": {
            **ms_stats(latencies),
            "k": 8,
            "self_match_first": f"{self_first}/{len(queries)}",
            "what": "SearchIndex.query_images([path]): load, prepare, embed, search, rows",
        },
        "cold_cli_query_s": {
            "median": round(statistics.median(cold), 3),
            "runs": [round(x, 3) for x in cold],
            "command": "karyosearch query IMAGE --index DIR -k 8 --json",
        },
        "bytes_per_image": {
            "faiss_index": round(faiss_bytes / report.count, 1),
            "hdf5_store": round(store_bytes / report.count, 1),
        },
    }


# -- synthetic scale -----------------------------------------------------------------------


NOISE = 0.9  # point spread around its sub-centre (cosine about 1 / sqrt(1 + NOISE^2))
SUB_SPREAD = 0.8  # sub-centre spread around its class centre


def centres(seed: int, classes: int = 24, per_class: int = 64) -> np.ndarray:
    rng = np.random.default_rng([seed, 0])
    cls = rng.standard_normal((classes, DIM), dtype=np.float32)
    cls /= np.linalg.norm(cls, axis=1, keepdims=True)
    sub = np.repeat(cls, per_class, axis=0)
    sub += SUB_SPREAD * rng.standard_normal(sub.shape, dtype=np.float32) / np.sqrt(DIM)
    return sub / np.linalg.norm(sub, axis=1, keepdims=True)


def vectors(seed: int, stream: int, start: int, n: int, c: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng([seed, stream, start])
    x = c[rng.integers(0, len(c), n)]
    x += NOISE * rng.standard_normal((n, DIM), dtype=np.float32) / np.sqrt(DIM)
    return np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)


def chunks(
    n: int, seed: int, c: np.ndarray, size: int = 50_000
) -> Iterator[tuple[int, np.ndarray]]:
    for start in range(0, n, size):
        yield start, vectors(seed, 1, start, min(size, n - start), c)


def sweep_for(index: Any) -> list[str]:
    """Search parameters to try: nprobe for IVF (up to nlist), efSearch for HNSW."""
    import faiss

    base = faiss.downcast_index(index.index)
    ivf = faiss.try_extract_index_ivf(base)
    if ivf is not None:
        return [f"nprobe={p}" for p in (8, 32, 128) if p <= ivf.nlist] or [f"nprobe={ivf.nlist}"]
    if "HNSW" in type(base).__name__:
        return ["efSearch=64", "efSearch=128", "efSearch=256"]
    return [""]


def measure_search(
    index: Any, queries: np.ndarray, gt: np.ndarray | None, args: argparse.Namespace, k: int = 10
) -> tuple[dict[str, Any], np.ndarray]:
    for q in queries[:5]:  # warm-up
        index.search(q[None], k)
    lat = []
    for q in queries[: args.latency_queries]:
        start = time.perf_counter()
        index.search(q[None], k)
        lat.append(time.perf_counter() - start)
    batch = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        _, ids = index.search(queries, k)
        batch.append(len(queries) / (time.perf_counter() - start))
    out: dict[str, Any] = {
        "single_query": ms_stats(lat),
        "batch_queries_per_s": round(statistics.median(batch), 1),
    }
    if gt is not None:
        out["recall_at_10"] = round(
            float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ids, gt, strict=True)])), 4
        )
        out["recall_at_1"] = round(float(np.mean(ids[:, 0] == gt[:, 0])), 4)
    return out, ids


def index_bytes(index: Any, tmp: Path) -> int:
    import faiss

    path = tmp / "size-probe.index"
    try:
        faiss.write_index(index, str(path))
        return path.stat().st_size
    finally:
        path.unlink(missing_ok=True)


def bench_synthetic(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import faiss

    from karyosearch.search.faiss_index import (
        apply_search_params,
        default_search_params,
        new_base_index,
    )

    c = centres(args.seed)
    queries = vectors(args.seed, 2, 0, args.nq, c)
    factories = [f.strip() for f in args.factories.split(";") if f.strip()]
    if "Flat" in factories:
        factories.remove("Flat")
    factories.insert(0, "Flat")
    results: dict[str, Any] = {}
    gt = None
    for factory in factories:
        log(f"synthetic {factory}: building over {args.n:,} vectors")
        base = new_base_index(factory, DIM)
        train_s = 0.0
        if not base.is_trained:
            train = vectors(args.seed, 3, 0, min(args.ivf_train, args.n), c)
            start = time.perf_counter()
            base.train(train)
            train_s = time.perf_counter() - start
            del train
        index = faiss.IndexIDMap2(base)
        start = time.perf_counter()
        for first, x in chunks(args.n, args.seed, c):
            index.add_with_ids(x, np.arange(first, first + len(x), dtype=np.int64))
        add_s = time.perf_counter() - start
        size = index_bytes(index, tmp)
        default = default_search_params(index)
        entry: dict[str, Any] = {
            "train_s": round(train_s, 2),
            "add_s": round(add_s, 2),
            "bytes_per_vector": round(size / args.n, 1),
            "index_bytes": size,
            "default_search_params": default,
            "search": {},
        }
        for params in sweep_for(index):
            apply_search_params(index, params)
            measured, ids = measure_search(index, queries, gt, args)
            entry["search"][params or "exact"] = measured
            if factory == "Flat":
                gt = ids
                measured["recall_at_10"] = 1.0
                measured["recall_at_1"] = 1.0
            log(
                f"  {params or 'exact'}: recall@10 {measured['recall_at_10']}, single query "
                f"{measured['single_query']['median_ms']} ms, "
                f"{measured['batch_queries_per_s']} q/s batched"
            )
        results[factory] = entry
        del index, base
        gc.collect()
    return {
        "n": args.n,
        "dimension": DIM,
        "queries": args.nq,
        "k": 10,
        "ivf_train_vectors": args.ivf_train,
        "data": (
            f"clustered unit vectors: 24 class centres x 64 sub-centres (spread {SUB_SPREAD}), "
            f"points with noise {NOISE} (cosine to their sub-centre ~"
            f"{1 / np.sqrt(1 + NOISE**2):.2f}); queries drawn apart from the indexed vectors"
        ),
        "recall": "share of the exact top-10 (Flat) ids found in the index's top-10",
        "factories": results,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-index-", dir=args.tmp))
    report: dict[str, Any] = {
        "benchmark": "index",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": machine(),
        "settings": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k not in ("json_out", "tmp")
        },
        "statistic": "median over repeats (throughput) or over queries (latency); p99 over queries",
    }
    try:
        if not args.skip_real:
            model = args.model or random_checkpoint(tmp, args.quick)
            report["real"] = bench_real(args, model, tmp)
        if not args.skip_synthetic:
            report["synthetic"] = bench_synthetic(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report["machine"]["load_average_after"] = (
        list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    )
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("real", "synthetic") if k in report}, indent=2))
    print(f"saved {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
