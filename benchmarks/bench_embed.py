"""Embedding throughput (images/s, files to vectors, as `karyosearch index` embeds) beside
the ceiling this CPU allows.

- FLOPs per image: the encoder's forward pass at the model's input size, counted with
  `torch.utils.flop_counter.FlopCounterMode` (2 FLOPs per multiply-add: convolutions and
  matrix products; element-wise work is left out, so the ceiling is generous);
- the ceiling: the GFLOP/s of a large matrix product (4096 x 4096 x 4096) in float32 and in
  bf16 on the same threads, over those FLOPs: images/s the CPU could reach if the network ran
  at matmul speed;
- throughput of `embed_files` on real BioImLab files for batch sizes and thread counts, with
  the next batches read while the network runs (`READ_AHEAD` = 2) and, to compare, read only
  when asked (0, the reading before this change); bf16 autocast only where the CPU has it
  natively (`util.runtime.cpu_has_fast_bf16`); and the network alone on prepared arrays.

Each setting is the median of `--repeats` passes; the ratio to the ceiling of the dtype used.

    .venv/bin/python benchmarks/bench_embed.py                  # ~4 min on 2 cores
    .venv/bin/python benchmarks/bench_embed.py --images 512 --repeats 1 --note "quick look"

Saves benchmarks/results/embed.json with the machine (`describe`) and the load average.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / ".." / "shared" / "data" / "bioimlab")
    parser.add_argument(
        "--model", type=Path, default=None, help="encoder (default: the shipped Q-band one)"
    )
    parser.add_argument("--images", type=int, default=1024, help="files per pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--onnx", action="store_true", help="also ONNX Runtime (float32)")
    parser.add_argument(
        "--fp32", action="store_true", help="also the network in float32 where bf16 is native"
    )
    parser.add_argument("--note", default="", help="what else ran on the machine")
    parser.add_argument(
        "--json-out", type=Path, default=REPO / "benchmarks" / "results" / "embed.json"
    )
    return parser.parse_args(argv)


def flops_per_image(encoder: Any) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    cfg = encoder.cfg
    x = torch.rand(1, cfg.in_chans, cfg.image_size, cfg.image_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        encoder.embed_and_score(x)
    return float(counter.get_total_flops())


def matmul_gflops(dtype: Any, n: int = 4096, seconds: float = 4.0) -> float:
    """GFLOP/s of an n x n x n matrix product in `dtype` on torch's threads: the best of
    torch.mm (oneDNN/MKL) and, for float32, numpy's BLAS, over repeated runs (one slow run
    beside other work would understate the ceiling)."""
    import torch

    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    products = [lambda: torch.mm(a, b)]
    if dtype == torch.float32:
        an, bn = a.numpy(), b.numpy()
        products.append(lambda: an @ bn)
    best = 0.0
    for product in products:
        product()  # warm
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            product()
            best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import numpy as np
    import torch
    from record import append_run, shipped_model

    args.model = args.model or shipped_model()

    import karyosearch.model.embed as embed
    from karyosearch.data.datasets import read_dataset
    from karyosearch.data.image import load, prepare_input
    from karyosearch.model.checkpoint import load_encoder
    from karyosearch.util.runtime import cpu_has_fast_bf16

    load_before = list(os.getloadavg())
    encoder = load_encoder(args.model)
    bf16 = cpu_has_fast_bf16()
    items = read_dataset(args.data).items
    paths = [str(it.path) for it in items[:: max(1, len(items) // args.images)]][: args.images]
    flops = flops_per_image(encoder)
    result: dict[str, Any] = {
        "model": args.model.name,
        "image_size": encoder.cfg.image_size,
        "gflop_per_image": round(flops / 1e9, 3),
        "native_bf16": bf16,
        "images_per_pass": len(paths),
        "ceiling": {},
        "files": [],
        "network_only": [],
    }
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name, dtype in [("float32", torch.float32), ("bf16", torch.bfloat16)]:
            if name == "bf16" and not bf16:
                continue  # emulated bf16 is no ceiling
            gflops = matmul_gflops(dtype)
            result["ceiling"][f"{name}, {threads} threads"] = {
                "matmul_gflop_per_s": round(gflops, 1),
                "images_per_s": round(gflops * 1e9 / flops, 1),
            }
    print("ceiling", result["ceiling"], file=sys.stderr, flush=True)

    def ratio(images_per_s: float, dtype: str, threads: int) -> float:
        ceiling = result["ceiling"].get(f"{dtype}, {threads} threads", {}).get("images_per_s")
        return round(images_per_s / ceiling, 3) if ceiling else float("nan")

    arrays = np.stack([prepare_input(load(p), encoder.cfg.image_size) for p in paths[:256]])
    for threads in args.threads:
        torch.set_num_threads(threads)
        for fast in ([False] if args.fp32 or not bf16 else []) + ([True] if bf16 else []):
            dtype = "bf16" if fast else "float32"
            for batch in args.batch_sizes:
                embed.embed_arrays(encoder, arrays[:batch], batch, fast)  # warm
                rates = []
                for _ in range(args.repeats):
                    t = time.perf_counter()
                    embed.embed_arrays(encoder, arrays, batch, fast)
                    rates.append(len(arrays) / (time.perf_counter() - t))
                rate = statistics.median(rates)
                row = {"threads": threads, "dtype": dtype, "batch": batch}
                row |= {
                    "images_per_s": round(rate, 1),
                    "ratio_to_ceiling": ratio(rate, dtype, threads),
                }
                result["network_only"].append(row)
                print("network", row, file=sys.stderr, flush=True)

    def files_pass(batch: int, fast: bool, ahead: int, enc: Any) -> float:
        embed.READ_AHEAD = ahead
        rates = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            embed.embed_files(enc, paths, batch, fast=fast)
            rates.append(len(paths) / (time.perf_counter() - t))
        return statistics.median(rates)

    fast = bf16
    dtype = "bf16" if fast else "float32"
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch in args.batch_sizes:
            for ahead in (0, 2):
                rate = files_pass(batch, fast, ahead, encoder)
                row = {"threads": threads, "dtype": dtype, "batch": batch, "read_ahead": ahead}
                row |= {
                    "images_per_s": round(rate, 1),
                    "ratio_to_ceiling": ratio(rate, dtype, threads),
                }
                result["files"].append(row)
                print("files", row, file=sys.stderr, flush=True)
    if args.onnx:
        from karyosearch.model.onnx_encoder import OnnxEncoder, cached_path, export_onnx

        path = cached_path(encoder.fingerprint)
        if not path.is_file():
            export_onnx(encoder, path)
        for threads in args.threads:
            session = OnnxEncoder(path, threads=threads)
            for batch in args.batch_sizes:
                rate = files_pass(batch, False, 2, session)
                row = {"threads": threads, "dtype": "float32 (onnxruntime)", "batch": batch}
                row |= {"read_ahead": 2, "images_per_s": round(rate, 1)}
                row["ratio_to_ceiling"] = ratio(rate, "float32", threads)
                result["files"].append(row)
                print("files", row, file=sys.stderr, flush=True)
    embed.READ_AHEAD = 2
    best = max(result["files"], key=lambda r: r["images_per_s"])
    result["best_files"] = best
    result["lscpu_flags_vector"] = _vector_flags()
    append_run(args.json_out, result, args.note, load_before)
    print(json.dumps({"best_files": best, "ceiling": result["ceiling"]}, indent=2))
    print(f"saved {args.json_out}")


def _vector_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = next((ln.split(":", 1)[1].split() for ln in fh if ln.startswith("flags")), [])
    except OSError:
        return []
    keep = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
    return [f for f in keep if f in flags]


if __name__ == "__main__":
    main()
