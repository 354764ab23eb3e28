"""Where a brighter scan's accuracy goes: the crop's content box, measured on validation crops.

The Q-band encoder shipped until 2026-12-01 lost about nine points to gamma 0.7
(bench_robustness.py). Gamma lifts faint pixels (stray specks, a neighbour's edge) over the
pipeline's fixed foreground threshold (`data.image.FOREGROUND_DELTA`), the content box grows
and the chromosome is framed smaller. This probe re-runs the encoder on validation crops, clean and
degraded (`degrade.py`), with the content box found three ways:

- `threshold`: preprocessing v1's (every pixel FOREGROUND_DELTA above the background);
- `components`: the same mask, keeping its connected components (8-connected) of at least
  5% of the largest one's area (`scipy.ndimage.label`): what this probe found, and what
  preprocessing v2 does (`data.image.content_box`);
- `erode1`: the box of the mask eroded by one pixel (3 x 3), grown back by one.

It changes nothing in the library (the box is patched for the probe only; an encoder of
either version sees all three) and reads no test crop: it is how a change to the pipeline
would be chosen.

    .venv/bin/python benchmarks/probe_content_box.py \\
        --model models/bioimlab-proxy-resnext-cbam-128px.pt --data ../shared/data/bioimlab \\
        --json-out benchmarks/results/probe_content_box.bioimlab.json
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from degrade import DEGRADATIONS  # noqa: E402

import karyosearch.data.image as image  # noqa: E402
from karyosearch.data.datasets import read_dataset  # noqa: E402
from karyosearch.data.splits import split_dataset  # noqa: E402
from karyosearch.model.checkpoint import load_encoder  # noqa: E402
from karyosearch.model.embed import embed_arrays  # noqa: E402
from karyosearch.util.atomic import write_json  # noqa: E402
from karyosearch.util.runtime import describe, timestamp  # noqa: E402

Box = tuple[int, int, int, int] | None
CONDITIONS = ("clean", "scale 0.5", "gamma 0.7", "gamma 1.4", "blur sigma 1", "jpeg 50")


def _box_of(mask: np.ndarray, grow: int = 0) -> Box:
    if not mask.any():
        return None
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    return (max(int(rows[0]) - grow, 0), min(int(rows[-1]) + 1 + grow, h),
            max(int(cols[0]) - grow, 0), min(int(cols[-1]) + 1 + grow, w))  # fmt: skip


def eroded_box(bright: np.ndarray) -> Box:
    mask = image.foreground_mask(bright)
    p = np.pad(mask, 1)
    core = np.ones_like(mask)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            core &= p[dy : dy + mask.shape[0], dx : dx + mask.shape[1]]
    return _box_of(core, grow=1) if core.any() else _box_of(mask)


LIBRARY_BOX = image.content_box
# (bright, version) -> box: each variant ignores the version it is called with
VARIANTS: dict[str, Callable[[np.ndarray, int], Box]] = {
    "threshold": lambda bright, _version: LIBRARY_BOX(bright, 1),
    "components": lambda bright, _version: LIBRARY_BOX(bright, 2),
    "erode1": lambda bright, _version: eroded_box(bright),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=0, help="validation crops, seeded (0: all)")
    parser.add_argument("--json-out", type=Path, required=True)
    args = parser.parse_args(argv)
    encoder = load_encoder(args.model)
    record = encoder.train_record or {}
    dataset = read_dataset(args.data)
    val = split_dataset(dataset, record["split"], int(record["seed"])).val
    if args.limit and args.limit < len(val):
        val = np.sort(np.random.default_rng(0).choice(val, args.limit, replace=False))
    paths = [str(dataset.items[i].path) for i in val]
    labels = np.asarray([dataset.items[i].label for i in val])
    size, canvas = encoder.cfg.image_size, encoder.cfg.canvas
    results: dict[str, dict[str, float]] = {}
    for variant, box in VARIANTS.items():
        image.content_box = box  # crop_chromosome looks it up at call time
        results[variant] = {}
        for name in CONDITIONS:
            degrade = DEGRADATIONS[name]
            arrays = np.stack([
                image.prepare_input(image.crop_chromosome(degrade(image.read_grey(p)), "auto", p),
                                    size, canvas)
                for p in paths
            ])  # fmt: skip
            _, scores = embed_arrays(encoder, arrays)
            results[variant][name] = float(np.mean(scores.argmax(1) == labels))
            print(f"{variant:10s} {name:13s} {100 * results[variant][name]:6.2f}%", flush=True)
    image.content_box = LIBRARY_BOX
    out = {
        "benchmark": "probe_content_box",
        "command": " ".join(sys.argv),
        "model": str(args.model),
        "fingerprint": encoder.fingerprint,
        "dataset": str(args.data),
        "split": record["split"],
        "seed": int(record["seed"]),
        "part": "val",
        "n": len(paths),
        "accuracy": results,
        "machine": describe(),
        "created": timestamp(),
    }
    print(f"saved {write_json(args.json_out, out)}")


if __name__ == "__main__":
    main()
