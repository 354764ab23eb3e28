"""Load test of `karyosearch serve` on loopback: concurrent clients querying single crops.

Starts `karyosearch serve` on 127.0.0.1 (a free port) as a child process over an index,
then `--clients` clients each POST one real crop at a time to /api/query for `--seconds`
(at most `--max-requests` requests in all), while a probe times GET /health twice a second
and the server's resident memory (VmRSS) is sampled every second. Saves throughput, p50/p90/
p99 latency, errors, /health latency, RSS over time and the machine (with its load average:
other work sharing the cores is named) to benchmarks/results/serve_load.json.

    karyosearch index ../shared/data/bioimlab --model models/bioimlab-proxy-resnext-cbam-128px.pt \\
        --index /tmp/bioimlab-5k
    python benchmarks/bench_serve.py --index /tmp/bioimlab-5k      # ~80 s
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "bioimlab" / "single_chromosomes"
OUT = REPO / "benchmarks" / "results" / "serve_load.json"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--index", type=Path, required=True, help="index folder (the 5k BioImLab one)")
    p.add_argument(
        "--model", type=Path, default=None, help="encoder (default: the shipped Q-band one)"
    )
    p.add_argument("--clients", type=int, default=50, help="concurrent clients")
    p.add_argument("--seconds", type=float, default=60.0, help="length of the load")
    p.add_argument("--max-requests", type=int, default=100_000, help="bound on requests in all")
    p.add_argument("--timeout", type=float, default=60.0, help="per-request timeout, s")
    p.add_argument("--crops", type=int, default=64, help="distinct real crops the clients cycle")
    p.add_argument("--k", type=int, default=8, help="neighbours per query")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=OUT)
    return p.parse_args()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def other_load() -> list[str]:
    """Other heavy karyosearch work on the machine (a training run shares the cores)."""
    try:
        out = subprocess.run(["ps", "-eo", "pid,ni,pcpu,args"], capture_output=True, text=True)
    except OSError:
        return []
    me = str(os.getpid())
    return [
        " ".join(line.split()[:3] + line.split()[3:9])
        for line in out.stdout.splitlines()[1:]
        if ("karyosearch" in line and any(w in line for w in (" train ", " bench ", " index ")))
        and line.split()[0] != me
    ]


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


async def run_load(args: argparse.Namespace, base: str, crops: list[tuple[str, bytes]]) -> dict:
    import httpx

    latencies: list[float] = []
    errors: Counter[str] = Counter()
    health: list[float] = []
    sent = 0
    deadline = time.monotonic() + args.seconds
    limits = httpx.Limits(
        max_connections=args.clients + 2, max_keepalive_connections=args.clients + 2
    )
    async with httpx.AsyncClient(base_url=base, timeout=args.timeout, limits=limits) as client:

        async def worker(i: int) -> None:
            nonlocal sent
            rng = random.Random(args.seed * 1000 + i)
            while time.monotonic() < deadline and sent < args.max_requests:
                sent += 1
                name, data = crops[rng.randrange(len(crops))]
                start = time.perf_counter()
                try:
                    r = await client.post(f"/api/query?k={args.k}", files={"files": (name, data)})
                    ok = r.status_code == 200 and len(r.json()["results"]) == 1
                    if not ok:
                        errors[f"status {r.status_code}"] += 1
                except (httpx.HTTPError, ValueError, KeyError) as err:
                    errors[type(err).__name__] += 1
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - start)

        async def probe() -> None:
            while time.monotonic() < deadline:
                start = time.perf_counter()
                try:
                    r = await client.get("/health")
                    if r.status_code == 200:
                        health.append(time.perf_counter() - start)
                except httpx.HTTPError:
                    errors["health"] += 1
                await asyncio.sleep(0.5)

        started = time.monotonic()
        await asyncio.gather(probe(), *(worker(i) for i in range(args.clients)))
        elapsed = time.monotonic() - started
    ms = [1000 * x for x in latencies]
    return {
        "requests": sent,
        "ok": len(latencies),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "seconds": round(elapsed, 2),
        "throughput_rps": round(len(latencies) / elapsed, 2),
        "latency_ms": {
            "p50": percentile(ms, 50),
            "p90": percentile(ms, 90),
            "p99": percentile(ms, 99),
            "max": max(ms) if ms else None,
            "mean": statistics.fmean(ms) if ms else None,
        },
        "health_ms": {
            "n": len(health),
            "p50": percentile([1000 * h for h in health], 50),
            "p99": percentile([1000 * h for h in health], 99),
            "max": 1000 * max(health) if health else None,
        },
    }


def main() -> None:
    args = parse_args()
    from record import shipped_model

    from karyosearch.util.runtime import describe

    args.model = args.model or shipped_model()

    files = sorted(DATA.glob("*/*.bmp"))
    if not files:
        raise SystemExit(f"{DATA}: no BioImLab crops")
    picks = random.Random(args.seed).sample(files, min(args.crops, len(files)))
    crops = [(p.name, p.read_bytes()) for p in picks]

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("KARYOSEARCH_WRITE_TOKEN", None)
    cmd = [sys.executable, "-m", "karyosearch.cli", "serve", "--index", str(args.index),
           "--model", str(args.model), "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    before = {"load_average": list(os.getloadavg()), "other_karyosearch_work": other_load()}
    server = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    samples: list[tuple[float, float]] = []
    try:
        import httpx

        t0 = time.monotonic()
        while True:
            if server.poll() is not None:
                raise SystemExit(f"the server exited: {server.stderr.read()[-2000:]}")
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - t0 > 180:
                raise SystemExit("the server did not answer /health within 180 s")
            time.sleep(0.5)
        startup_s = time.monotonic() - t0
        card = httpx.get(base + "/api/index", timeout=10).json()
        for name, data in crops[:5]:  # warm-up, not timed
            httpx.post(base + "/api/query", files={"files": (name, data)}, timeout=60)

        stop = False

        async def sample_rss() -> None:
            start = time.monotonic()
            while not stop:
                value = rss_mb(server.pid)
                if value is not None:
                    samples.append((round(time.monotonic() - start, 1), round(value, 1)))
                await asyncio.sleep(1.0)

        async def both() -> dict:
            nonlocal stop
            sampler = asyncio.create_task(sample_rss())
            result = await run_load(args, base, crops)
            stop = True
            await sampler
            return result

        result = asyncio.run(both())
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()

    rss = [v for _, v in samples]
    half = rss[len(rss) // 2 :]
    after = {"load_average": list(os.getloadavg()), "other_karyosearch_work": other_load()}
    shared = bool(before["other_karyosearch_work"] or after["other_karyosearch_work"])
    out: dict[str, Any] = {
        "benchmark": "serve_load",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": {
            "clients": args.clients,
            "seconds": args.seconds,
            "max_requests": args.max_requests,
            "k": args.k,
            "distinct_crops": len(crops),
            "seed": args.seed,
            "host": "127.0.0.1 (loopback)",
            "index": str(args.index),
            "index_count": card["count"],
            "factory": card["factory"],
            "model": str(args.model.name),
        },
        **result,
        "server_startup_s": round(startup_s, 2),
        "server_rss_mb": {
            "start": rss[0] if rss else None,
            "end": rss[-1] if rss else None,
            "max": max(rss) if rss else None,
            "second_half_growth": round(half[-1] - half[0], 1) if len(half) > 1 else None,
            "samples": samples,
        },
        "machine": describe(),
        "before": before,
        "after": after,
        "shared_cores": shared,
        "note": (
            "other karyosearch work (a training run) shared the cores during this run; "
            "throughput and latency are lower than on an idle machine"
            if shared
            else "no other karyosearch work was running"
        ),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    lat = out["latency_ms"]
    print(
        f"{out['ok']} ok / {out['requests']} requests in {out['seconds']} s: "
        f"{out['throughput_rps']} req/s, p50 {lat['p50']:.0f} ms, p99 {lat['p99']:.0f} ms, "
        f"errors {out['errors']}; /health p99 {out['health_ms']['p99']:.0f} ms; RSS "
        f"{out['server_rss_mb']['start']} -> {out['server_rss_mb']['end']} MB "
        f"(max {out['server_rss_mb']['max']}); {out['note']}"
    )
    print(args.out)


if __name__ == "__main__":
    main()
