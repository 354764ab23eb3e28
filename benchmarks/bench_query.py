"""Query latency: a cold `karyosearch query`, where its seconds go, and queries in one process.

Against an index of the BioImLab images (built once with the bundled model; `--data`, `--model`
and `--factory` for another), on one image:

- cold: `karyosearch query IMAGE --json` as a fresh process, `--repeats` times per backend
  (ONNX Runtime with its export cached, and PyTorch with `KARYOSEARCH_ONNX=0`); the median;
- breakdown: in a fresh process per backend, the seconds of each stage (imports, index open,
  encoder load, first and second query);
- in-process: `--queries` single-image queries (load, prepare, embed, search, rows:
  `SearchIndex.query_images`), one after another over different images, per backend, in a
  fresh process each; median and 99th percentile;
- networks side by side, in one process on the same images: PyTorch eager (float32, bf16
  autocast where the CPU has bf16), torch.jit.trace + freeze (float32, bf16 weights),
  torch.compile (with `--compile`: minutes to compile) and ONNX Runtime (as queries run it:
  2 threads whose idle workers sleep; and, not used, with spinning workers, on 1 thread, and
  statically quantised to int8, calibrated on 48 crops): setup seconds, the first call, median
  and p99 of one image, the CPU seconds a call takes (all threads), and the smallest cosine to
  eager float32. `--gap-ms` waits between the calls, as a user's or a server's queries are
  apart (idle workers then go to sleep, or spin).

    .venv/bin/python benchmarks/bench_query.py                 # ~3 min on 2 cores
    .venv/bin/python benchmarks/bench_query.py --note "training beside it"

Every run records the machine (`util.runtime.describe`) and the load average before and after;
a figure measured beside other work says so in `--note`. Saves benchmarks/results/query.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BACKENDS = {"onnxruntime": "1", "torch": "0"}  # name -> KARYOSEARCH_ONNX


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / ".." / "shared" / "data" / "bioimlab")
    parser.add_argument(
        "--model", type=Path, default=None, help="encoder (default: the shipped Q-band one)"
    )
    parser.add_argument("--index", type=Path, default=Path("/tmp/ks-speed-index"))
    parser.add_argument(
        "--factory", default=None, help="FAISS factory of the index it builds (default Flat)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="cold CLI runs per backend")
    parser.add_argument("--queries", type=int, default=200, help="in-process queries")
    parser.add_argument("--forwards", type=int, default=60, help="network calls per variant")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument(
        "--gap-ms", type=float, default=0.0, help="pause between network calls (default 0)"
    )
    parser.add_argument("--note", default="", help="what else ran on the machine")
    parser.add_argument(
        "--json-out", type=Path, default=REPO / "benchmarks" / "results" / "query.json"
    )
    parser.add_argument("--child", choices=["breakdown", "inprocess", "networks"])
    return parser.parse_args(argv)


def images(args: argparse.Namespace, n: int) -> list[str]:
    """n image files spread over the dataset (every k-th of the sorted files)."""
    from karyosearch.data.image import IMAGE_SUFFIXES

    files = sorted(
        str(p) for p in args.data.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )  # gband612 names its cell folders `<cell>.tiff`
    step = max(1, len(files) // n)
    return files[::step][:n]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def summary_ms(seconds: list[float]) -> dict[str, float]:
    ms = [1e3 * s for s in seconds]
    return {
        "median_ms": round(statistics.median(ms), 2),
        "p99_ms": round(pct(ms, 99), 2),
        "min_ms": round(min(ms), 2),
        "n": len(ms),
    }


# -- children (fresh processes) ------------------------------------------------------------


def child_breakdown(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    stages: dict[str, float] = {}

    def mark(name: str) -> None:
        nonlocal t0
        now = time.perf_counter()
        stages[name] = round(now - t0, 4)
        t0 = now

    import numpy  # noqa: F401

    mark("import numpy")
    from karyosearch.search.engine import SearchIndex

    mark("import karyosearch.search.engine")
    import faiss  # noqa: F401

    mark("import faiss")
    index = SearchIndex.open(args.index)
    mark("index open (FAISS file, store rows, card)")
    encoder = index.encoder
    mark(f"encoder load ({type(encoder).__name__})")
    image = images(args, 1)[0]
    index.query_images([image], k=8)
    mark("first query")
    index.query_images([image], k=8)
    mark("second query")
    stages["torch imported"] = "torch" in sys.modules
    stages["h5py imported"] = "h5py" in sys.modules
    return stages


def child_inprocess(args: argparse.Namespace) -> dict[str, Any]:
    from karyosearch.search.engine import SearchIndex

    index = SearchIndex.open(args.index)
    paths = images(args, args.queries)
    index.query_images(paths[:2], k=8)  # warm: the first forward builds the kernels
    seconds = []
    for path in paths:
        t = time.perf_counter()
        index.query_images([path], k=8)
        seconds.append(time.perf_counter() - t)
    return {"encoder": type(index.encoder).__name__, **summary_ms(seconds)}


def child_networks(args: argparse.Namespace) -> dict[str, Any]:
    import copy
    import warnings

    import numpy as np
    import torch

    from karyosearch.data.image import load, prepare_input
    from karyosearch.model.checkpoint import load_encoder
    from karyosearch.model.embed import to_model_input
    from karyosearch.model.onnx_encoder import OnnxEncoder, cached_path, export_onnx
    from karyosearch.util.runtime import autocast, cpu_has_fast_bf16

    warnings.simplefilter("ignore")
    encoder = load_encoder(args.model)
    cfg = encoder.cfg
    cpu = torch.device("cpu")
    arrays = np.stack([prepare_input(load(p), cfg.image_size) for p in images(args, 16)])
    one = to_model_input(arrays[:1], cpu)
    batch = to_model_input(arrays, cpu)

    def eager(fast: bool):
        def setup():
            def run(x):
                with torch.no_grad(), autocast(cpu, fast):
                    return encoder(x).float().numpy()

            return run

        return setup

    def traced(dtype: torch.dtype):
        def setup():
            model = encoder
            if dtype != torch.float32:
                model = copy.deepcopy(encoder).to(dtype)
                model.norm.float()  # the head runs in float32
            with torch.no_grad():
                frozen = torch.jit.freeze(torch.jit.trace(model.eval(), one.to(dtype)))

            def run(x):
                with torch.no_grad():
                    return frozen(x.to(dtype)).float().numpy()

            return run

        return setup

    def compiled():
        fn = torch.compile(encoder)

        def run(x):
            with torch.no_grad(), autocast(cpu, True):
                return fn(x).float().numpy()

        run(one)
        return run

    def exported() -> Path:
        path = cached_path(encoder.fingerprint)
        if not path.is_file():
            export_onnx(encoder, path)
        return path

    def onnx():
        session = OnnxEncoder(exported())
        return lambda x: session.embed_and_score(x.contiguous().numpy())[0]

    def onnx_variant(threads: int | None = None, spin: bool = False, int8: bool = False):
        def setup():
            import tempfile

            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads or len(os.sched_getaffinity(0))  # as queries
            options.inter_op_num_threads = 1
            options.add_session_config_entry("session.intra_op.allow_spinning", str(int(spin)))
            with tempfile.TemporaryDirectory() as tmp:
                path = exported()
                if int8:  # calibrated on other crops than the 16 timed and compared
                    timed = set(images(args, 16))
                    others = [p for p in images(args, 64) if p not in timed][:48]
                    calibration = [prepare_input(load(p), cfg.image_size) for p in others]
                    path = quantised(path, calibration, Path(tmp))
                session = ort.InferenceSession(
                    str(path), options, providers=["CPUExecutionProvider"]
                )
            return lambda x: session.run(None, {"images": x.contiguous().numpy()})[0]

        return setup

    variants = {
        "torch eager float32": eager(False),
        "torch eager bf16 autocast": eager(True) if cpu_has_fast_bf16() else None,
        "torch.jit.trace+freeze float32": traced(torch.float32),
        "torch.jit.trace+freeze bf16 weights": traced(torch.bfloat16),
        "torch.compile bf16 autocast": compiled if args.compile else None,
        "onnxruntime float32": onnx,
        "onnxruntime float32, spinning workers": onnx_variant(spin=True),
        "onnxruntime float32, 1 thread": onnx_variant(threads=1),
        "onnxruntime int8 static (QDQ)": onnx_variant(int8=True),
    }
    out: dict[str, Any] = {}
    reference = None
    for name, setup in variants.items():
        if setup is None:
            continue
        t = time.perf_counter()
        run = setup()
        setup_s = time.perf_counter() - t
        t = time.perf_counter()
        run(one)
        first_s = time.perf_counter() - t
        seconds = []
        cpu_start = time.process_time()
        for _ in range(args.forwards):
            time.sleep(args.gap_ms / 1e3)
            t = time.perf_counter()
            run(one)
            seconds.append(time.perf_counter() - t)
        cpu_ms = 1e3 * (time.process_time() - cpu_start) / args.forwards
        t = time.perf_counter()
        emb = run(batch)
        batch_s = time.perf_counter() - t
        if reference is None:
            reference = emb
        cosine = np.sum(reference * emb, axis=1) / np.linalg.norm(emb, axis=1)
        out[name] = {
            "setup_s": round(setup_s, 3),
            "first_call_s": round(first_s, 4),
            **summary_ms(seconds),
            "cpu_ms_per_call": round(cpu_ms, 2),
            "batch16_images_per_s": round(len(batch) / batch_s, 1),
            "min_cosine_vs_eager_float32": round(float(cosine.min()), 7),
        }
        print(name, out[name], file=sys.stderr, flush=True)
    out["torch_threads"] = torch.get_num_threads()
    return out


def quantised(path: Path, arrays: Any, folder: Path) -> Path:
    """A static int8 copy of the exported encoder at `path` (QDQ; unsigned activations,
    per-channel signed weights), calibrated on the prepared images `arrays` (N, S, S)."""
    import numpy as np
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    x = np.asarray(arrays, np.float32)[:, None]

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"images": x[i : i + 8]} for i in range(0, len(x), 8)])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    pre, out = folder / "pre.onnx", folder / "int8.onnx"
    quant_pre_process(str(path), str(pre))
    quantize_static(
        str(pre),
        str(out),
        Batches(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,  # unsigned activations, signed weights (u8s8)
        weight_type=QuantType.QInt8,
    )
    return out


def run_child(args: argparse.Namespace, which: str, onnx: str) -> dict[str, Any]:
    env = {**os.environ, "KARYOSEARCH_ONNX": onnx, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, __file__, "--child", which, "--index", str(args.index)]
    cmd += ["--data", str(args.data), "--model", str(args.model), "--queries", str(args.queries)]
    cmd += ["--forwards", str(args.forwards), "--gap-ms", str(args.gap_ms)]
    cmd += ["--compile"] if args.compile else []
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def cold_cli(args: argparse.Namespace, onnx: str, image: str) -> dict[str, Any]:
    env = {**os.environ, "KARYOSEARCH_ONNX": onnx, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "karyosearch.cli", "query", image, "--index", str(args.index)]
    cmd.append("--json")
    subprocess.run(cmd, env=env, check=True, capture_output=True)  # exports once, warms the OS
    seconds = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        seconds.append(time.perf_counter() - t)
    return {
        "median_s": round(statistics.median(seconds), 3),
        "runs_s": [round(s, 3) for s in seconds],
    }


def ensure_index(args: argparse.Namespace) -> None:
    if (args.index / "card.json").is_file():
        return
    from karyosearch.search.update import build_or_update

    print(f"building {args.index} (a few minutes)", file=sys.stderr)
    build_or_update(args.index, args.data, args.model, factory=args.factory)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        fn = {"breakdown": child_breakdown, "inprocess": child_inprocess}.get(args.child)
        print(json.dumps((fn or child_networks)(args)))
        return
    sys.path.insert(0, str(REPO))
    from record import append_run, shipped_model

    args.model = args.model or shipped_model()
    ensure_index(args)
    load_before = list(os.getloadavg())
    image = images(args, 1)[0]
    from karyosearch.search.folder import read_card

    card = read_card(args.index)
    result: dict[str, Any] = {
        "image": image,
        "index": str(args.index),
        "factory": card.factory,
        "search_params": card.search_params,
    }
    result["cold_cli"] = {name: cold_cli(args, flag, image) for name, flag in BACKENDS.items()}
    print("cold", result["cold_cli"], file=sys.stderr)
    result["breakdown_s"] = {n: run_child(args, "breakdown", f) for n, f in BACKENDS.items()}
    print("breakdown", result["breakdown_s"], file=sys.stderr)
    result["in_process"] = {n: run_child(args, "inprocess", f) for n, f in BACKENDS.items()}
    print("in-process", result["in_process"], file=sys.stderr)
    result["networks_one_image"] = run_child(args, "networks", "1")
    append_run(args.json_out, result, args.note, load_before)
    print(json.dumps({k: result[k] for k in ("cold_cli", "in_process")}, indent=2))
    print(f"saved {args.json_out}")


if __name__ == "__main__":
    main()
