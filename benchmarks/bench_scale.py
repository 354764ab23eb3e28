"""Scale that tells the truth: FAISS index types on vectors shaped like the real embeddings.

1. Real embeddings of both datasets with the bundled model: BioImLab (the 5,474 of a built
   index's store) and G-band (`--gband` crops of gband612 embedded now; no G-band model ships
   yet, so with the BioImLab model: say so).
2. A model of them, per dataset: the 24 class means, the pooled within-class spread as a PCA
   spectrum (the top `--rank` components and their variances; the rest as isotropic noise of
   the remaining variance), and the class frequencies. `--n` synthetic vectors are drawn from
   it (a dataset, a class, its mean plus low-rank Gaussian plus noise, renormalised) into a
   float32 memory map, chunk by chunk. The JSON compares real and synthetic: cosine to the
   class mean, cosine to the nearest neighbour, variance in the top PCA components.
3. For each factory string (`--factories`): build time (train on a `--train` sample, add all),
   bytes per vector (the serialised index), recall@10 against exact search for `--queries`
   fresh synthetic queries (ground truth by brute force over the memory map, in chunks) over a
   sweep of nprobe / efSearch, single-query latency (median, p99) and batched (64) time per
   query at each setting.

10M vectors do not fit this machine (80 GB as float32); their figures are extrapolated from
the measured per-vector costs (`extrapolated_10m`, said so in the JSON).

    .venv/bin/python benchmarks/bench_scale.py --n 1000000          # ~15 min on 2 cores
    .venv/bin/python benchmarks/bench_scale.py --n 100000 --factories "IVF256,SQ8"   # quick

Saves benchmarks/results/scale.json (appends a run; `latest` is the newest).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DIM = 2048


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--index", type=Path, default=Path("/tmp/ks-speed-index"), help="BioImLab")
    p.add_argument("--gband-data", type=Path, default=REPO / ".." / "shared" / "data" / "gband612")
    p.add_argument(
        "--model", type=Path, default=None, help="encoder (default: the shipped Q-band one)"
    )
    p.add_argument("--gband", type=int, default=3000, help="G-band crops to embed")
    p.add_argument("--rank", type=int, default=256, help="PCA components modelled")
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--train", type=int, default=60_000, help="training sample of the quantisers")
    p.add_argument("--factories", default="IVF1024,SQ8;IVF1024,Flat;PCAR512,IVF1024,SQ8")
    p.add_argument("--latency-queries", type=int, default=100)
    p.add_argument("--work", type=Path, default=Path("/tmp/ks-scale"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--note", default="")
    p.add_argument("--json-out", type=Path, default=REPO / "benchmarks" / "results" / "scale.json")
    return p.parse_args(argv)


# -- the real embeddings and their model ----------------------------------------------------


def real_embeddings(args: argparse.Namespace) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from karyosearch.search.store import read_store

    rows, _ = read_store(args.index / "store.h5", embeddings=True)
    out = {"bioimlab": (rows.embeddings, rows.labels.astype(np.int64))}
    cache = args.work / f"gband-{args.gband}.npz"
    if cache.is_file():
        z = np.load(cache)
        out["gband612"] = (z["x"], z["y"])
        return out
    from karyosearch.data.datasets import read_dataset
    from karyosearch.model.checkpoint import load_encoder
    from karyosearch.model.embed import embed_files

    items = read_dataset(args.gband_data).items
    items = items[:: max(1, len(items) // args.gband)][: args.gband]
    embedded = embed_files(load_encoder(args.model), [it.path for it in items])
    by_path = {str(it.path): it.label for it in items}
    y = np.array([by_path[p] for p in embedded.paths], np.int64)
    args.work.mkdir(parents=True, exist_ok=True)
    np.savez(cache, x=embedded.embeddings, y=y)
    out["gband612"] = (embedded.embeddings, y)
    return out


def fit_model(x: np.ndarray, y: np.ndarray, rank: int) -> dict[str, Any]:
    classes = np.unique(y[y >= 0])
    means = np.stack([x[y == c].mean(0) for c in classes])
    residual = x - means[np.searchsorted(classes, y)]
    _, s, vt = np.linalg.svd(residual - residual.mean(0), full_matrices=False)
    var = s**2 / (len(x) - 1)
    rest = float(var[rank:].sum() / max(1, x.shape[1] - rank))
    return {
        "means": means.astype(np.float32),
        "freq": np.array([(y == c).mean() for c in classes]),
        "components": vt[:rank].astype(np.float32),
        "std": np.sqrt(var[:rank]).astype(np.float32),
        "rest_std": float(np.sqrt(rest)),
        "spectrum": var,
    }


def draw(models: list[dict[str, Any]], n: int, rng: np.random.Generator) -> np.ndarray:
    which = rng.integers(0, len(models), n)
    out = np.empty((n, DIM), np.float32)
    for m_i, m in enumerate(models):
        sel = np.flatnonzero(which == m_i)
        c = rng.choice(len(m["means"]), size=len(sel), p=m["freq"])
        z = rng.standard_normal((len(sel), len(m["std"])), dtype=np.float32) * m["std"]
        v = m["means"][c] + z @ m["components"]
        v += rng.standard_normal(v.shape, dtype=np.float32) * m["rest_std"]
        out[sel] = v
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def shape_stats(x: np.ndarray, y: np.ndarray | None, means: np.ndarray | None) -> dict[str, float]:
    import faiss

    sims, _ = faiss.knn(x[:2000], x, 2, metric=faiss.METRIC_INNER_PRODUCT)
    centred = x - x.mean(0)
    var = np.linalg.svd(centred[:4000], compute_uv=False) ** 2
    share = np.cumsum(var) / var.sum()
    out = {
        "nn_cosine_median": float(np.median(sims[:, 1])),
        "variance_top10": float(share[9]),
        "variance_top50": float(share[49]),
        "variance_top256": float(share[255]),
        "participation_ratio": float(var.sum() ** 2 / (var**2).sum()),
    }
    if y is not None and means is not None:
        m = means / np.linalg.norm(means, axis=1, keepdims=True)
        out["cosine_to_class_mean_median"] = float(np.median(np.sum(x * m[y], axis=1)))
    return out


# -- the benchmark ----------------------------------------------------------------------------


def ground_truth(base: np.ndarray, queries: np.ndarray, k: int, chunk: int = 100_000) -> np.ndarray:
    best_s = np.full((len(queries), k), -np.inf, np.float32)
    best_i = np.zeros((len(queries), k), np.int64)
    for start in range(0, len(base), chunk):
        s = queries @ np.asarray(base[start : start + chunk]).T
        i = np.argpartition(-s, k, axis=1)[:, :k]
        cand_s = np.concatenate([best_s, np.take_along_axis(s, i, 1)], 1)
        cand_i = np.concatenate([best_i, i + start], 1)
        top = np.argsort(-cand_s, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(cand_s, top, 1), np.take_along_axis(cand_i, top, 1)
    return best_i


def bench_factory(
    factory: str, base: np.ndarray, queries: np.ndarray, truth: np.ndarray, args: argparse.Namespace
) -> dict[str, Any]:
    import faiss

    from karyosearch.search.faiss_index import new_base_index

    n = len(base)
    index = new_base_index(factory, DIM)
    t = time.perf_counter()
    if not index.is_trained:
        rng = np.random.default_rng(args.seed + 1)
        sample = np.sort(rng.choice(n, size=min(args.train, n), replace=False))
        index.train(np.ascontiguousarray(base[sample]))
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    for start in range(0, n, 100_000):
        index.add(np.ascontiguousarray(base[start : start + 100_000]))
    add_s = time.perf_counter() - t
    nbytes = len(faiss.serialize_index(index))
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        sweep = [("nprobe", v) for v in (1, 2, 4, 8, 16, 32, 64, 128) if v <= ivf.nlist]
    elif "HNSW" in factory:
        sweep = [("efSearch", v) for v in (16, 32, 64, 128, 256)]
    else:
        sweep = [("", 0)]
    space, rows = faiss.ParameterSpace(), []
    for name, value in sweep:
        if name:
            space.set_index_parameters(index, f"{name}={value}")
        _, found = index.search(queries, 10)
        recall = float(
            np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, found, strict=True)])
        )
        single = []
        for q in queries[: args.latency_queries]:
            t0 = time.perf_counter()
            index.search(q[None], 10)
            single.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        index.search(queries[:64], 10)
        batched = (time.perf_counter() - t0) / 64
        row = {"params": f"{name}={value}" if name else "", "recall_at_10": round(recall, 4)}
        row |= {"single_median_ms": round(1e3 * statistics.median(single), 3)}
        row |= {"single_p99_ms": round(1e3 * sorted(single)[int(0.99 * (len(single) - 1))], 3)}
        row |= {"batched_ms_per_query": round(1e3 * batched, 3)}
        rows.append(row)
        print(factory, row, file=sys.stderr, flush=True)
    del index
    return {
        "factory": factory,
        "n": n,
        "train_s": round(train_s, 1),
        "add_s": round(add_s, 1),
        "build_s": round(train_s + add_s, 1),
        "bytes_per_vector": round(nbytes / n, 1),
        "memory_gib": round(nbytes / 2**30, 3),
        "sweep": rows,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from record import append_run, shipped_model

    args.model = args.model or shipped_model()

    load_before = list(os.getloadavg())
    args.work.mkdir(parents=True, exist_ok=True)
    real = real_embeddings(args)
    models = {name: fit_model(x, y, args.rank) for name, (x, y) in real.items()}
    rng = np.random.default_rng(args.seed)
    result: dict[str, Any] = {"n": args.n, "rank": args.rank, "shape": {}}
    for name, (x, y) in real.items():
        m = models[name]
        fake = draw([m], len(x), rng)
        fake_y = None
        result["shape"][name] = {
            "real": shape_stats(x, np.searchsorted(np.unique(y), y), m["means"]),
            "synthetic": shape_stats(fake, fake_y, None),
            "rest_std": m["rest_std"],
            "real_vectors": len(x),
        }
    print("shape", json.dumps(result["shape"], indent=1), file=sys.stderr, flush=True)
    path = args.work / f"base-{args.n}.f32"
    base = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(args.n, DIM))
    t = time.perf_counter()
    for start in range(0, args.n, 50_000):
        stop = min(args.n, start + 50_000)
        base[start:stop] = draw(list(models.values()), stop - start, rng)
    base.flush()
    result["generate_s"] = round(time.perf_counter() - t, 1)
    queries = draw(list(models.values()), args.queries, rng)
    t = time.perf_counter()
    truth = ground_truth(base, queries, 10)
    result["ground_truth_s"] = round(time.perf_counter() - t, 1)
    result["flat_exact_ms_per_query_brute_force"] = round(
        1e3 * result["ground_truth_s"] / args.queries, 2
    )
    result["indexes"] = []
    for factory in [f.strip() for f in args.factories.split(";") if f.strip()]:
        result["indexes"].append(bench_factory(factory, base, queries, truth, args))
    scale = 10_000_000 / args.n
    result["extrapolated_10m"] = {
        "how": "extrapolated, not measured: build and bytes scale with n, IVF list length "
        "(so latency at the same nprobe) with n / nlist; nlist would grow ~sqrt(10)x",
        **{
            r["factory"]: {
                "memory_gib": round(r["memory_gib"] * scale, 1),
                "build_s": round(r["build_s"] * scale),
            }
            for r in result["indexes"]
        },
    }
    append_run(args.json_out, result, args.note, load_before)
    print(f"saved {args.json_out}")
    del base
    path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
