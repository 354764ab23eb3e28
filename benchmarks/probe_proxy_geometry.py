"""Where an encoder's embeddings lie with respect to its class proxies, on training and
validation crops: why R@1 trails nearest-proxy accuracy.

The normalized softmax loss (`train.losses`) stops pulling a crop once its cosine to its own
proxy leads every other proxy's by a few temperatures; what the crop's embedding does outside
the span of the 24 proxies the loss never sees. Two crops of one class can then sit in one
proxy's cone and still be farther from each other than from a crop of another class, which
costs R@1 and not accuracy. This probe measures, per part: nearest-proxy accuracy and R@1;
the mean cosine of a crop to its own proxy and to the best other one; the share of a crop's
squared (unit) norm inside the proxies' span; and the cosine of each crop's nearest
same-class and nearest other-class neighbour. It reads no test crop: it is how a change to
the loss (`--set margin=M`) is argued for before it is trained.

    .venv/bin/python benchmarks/probe_proxy_geometry.py \\
        --model models/bioimlab-proxy-resnext-cbam-128px.pt --data ../shared/data/bioimlab \\
        --json-out benchmarks/results/probe_proxy_geometry.bioimlab-128px.paper-s1.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_embedding_transforms import embedded  # noqa: E402
from bench_robustness import add_own_split_args, header, own_split, save  # noqa: E402

from karyosearch.evaluation.metrics import recall_at_k  # noqa: E402
from karyosearch.model.predict import predicted_classes  # noqa: E402


def geometry(x: np.ndarray, labels: np.ndarray, proxies: np.ndarray) -> dict[str, float]:
    """The probe's figures for unit embeddings `x` with class `labels` and unit `proxies`."""
    rows = np.arange(len(labels))
    cosines = x @ proxies.T
    own = cosines[rows, labels]
    others = cosines.copy()
    others[rows, labels] = -np.inf
    basis, _ = np.linalg.qr(proxies.T)  # orthonormal basis of the proxies' span
    similar = x @ x.T
    np.fill_diagonal(similar, -np.inf)
    same = labels[:, None] == labels[None, :]
    return {
        "n": len(labels),
        "accuracy": float(np.mean(predicted_classes(cosines) == labels)),
        "recall_at_1": recall_at_k(x, labels, (1,))[1],
        "cosine_own_proxy": float(own.mean()),
        "cosine_own_proxy_q10": float(np.quantile(own, 0.1)),
        "cosine_best_other_proxy": float(others.max(1).mean()),
        "norm2_in_proxy_span": float(((x @ basis) ** 2).sum(1).mean()),
        "cosine_nearest_same_class": float(np.where(same, similar, -np.inf).max(1).mean()),
        "cosine_nearest_other_class": float(np.where(same, -np.inf, similar).max(1).mean()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_own_split_args(parser)
    parser.add_argument("--json-out", type=Path, required=True)
    args = parser.parse_args(argv)
    started = time.monotonic()
    encoder, dataset, split, seed, warnings, sides = own_split(args)
    proxies = encoder.unit_proxies().detach().cpu().numpy()
    parts = {}
    for part in ("train", "val"):
        parts[part] = geometry(*embedded(encoder, dataset, getattr(sides, part)), proxies)
        print(part, " ".join(f"{k} {v:.4g}" for k, v in parts[part].items()), flush=True)
    save(
        args.json_out,
        header("proxy_geometry", args, encoder, split, seed),
        {"warnings": warnings, "parts": parts, "seconds": time.monotonic() - started},
    )


if __name__ == "__main__":
    main()
