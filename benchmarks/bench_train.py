"""Training and inference throughput of the encoder, fp32 against the fast paths, in one run.

For one architecture and image size, times full training steps (forward, backward, AdamW
step) and inference (embedding) batches with:
  - fp32, contiguous (NCHW) memory
  - fp32, channels_last
  - bf16 autocast, channels_last
and the two stems (standard 7x7/2 + maxpool; small 3x3/1 + maxpool). Reports the median
images/s over repeats after warm-up, and saves JSON with the machine and versions.

    .venv/bin/python benchmarks/bench_train.py                 # 64 px, CBAM, batch 64
    .venv/bin/python benchmarks/bench_train.py --image-size 224 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from karyosearch.model.encoder import EncoderConfig, build_encoder  # noqa: E402
from karyosearch.train.losses import NormalizedSoftmaxLoss  # noqa: E402
from karyosearch.util.runtime import (
    cpu_has_fast_bf16,  # noqa: E402
    describe,  # noqa: E402
)


def time_steps(model, x, y, train: bool, bf16: bool, steps: int, warmup: int) -> list[float]:
    loss_fn = NormalizedSoftmaxLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    device = x.device
    rates = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        ctx = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
        if train:
            model.train()
            with ctx:
                emb, _ = model.embed_and_score(x)
            loss = loss_fn(emb, y, model.proxies)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        else:
            model.eval()
            with torch.no_grad(), ctx:
                model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            rates.append(len(x) / (time.perf_counter() - t))
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--arch", default="proxy-resnext-cbam")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per setting")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--stems", default="standard,small")
    ap.add_argument(
        "--skip-bf16", action="store_true", help="skip bf16 (very slow on CPUs without it)"
    )
    ap.add_argument("--json-out", default="benchmarks/results/train_throughput.json")
    args = ap.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    x0 = torch.rand(args.batch_size, 1, args.image_size, args.image_size, device=device)
    y = torch.randint(0, 24, (args.batch_size,), device=device)
    settings = [("fp32", False, False), ("fp32+channels_last", True, False)]
    if not args.skip_bf16:
        settings.append(("bf16+channels_last", True, True))
    rows = []
    for stem in args.stems.split(","):
        for name, channels_last, bf16 in settings:
            model = build_encoder(
                EncoderConfig(arch=args.arch, image_size=args.image_size, stem=stem)
            ).to(device)
            x = x0
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
                x = x0.contiguous(memory_format=torch.channels_last)
            # bf16 on a CPU without native bf16 is ~15-60x slower: time fewer steps there
            slow = bf16 and device.type == "cpu" and not cpu_has_fast_bf16()
            steps, warmup = (2, 1) if slow else (args.steps, args.warmup)
            for mode in ("train", "inference"):
                rates = time_steps(model, x, y, mode == "train", bf16, steps, warmup)
                row = {
                    "stem": stem,
                    "setting": name,
                    "mode": mode,
                    "images_per_s": statistics.median(rates),
                    "runs": rates,
                }
                rows.append(row)
                print(
                    f"{stem:9s} {name:20s} {mode:9s} {row['images_per_s']:8.1f} img/s", flush=True
                )
    out = {
        "benchmark": "train_throughput",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "arch": args.arch,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "device": args.device,
        "machine": describe(),
        "load_average": os.getloadavg(),
        "results": rows,
    }
    Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_out).write_text(json.dumps(out, indent=2))
    print(f"saved {args.json_out}")


if __name__ == "__main__":
    main()
