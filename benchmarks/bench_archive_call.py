"""Learning from the lab's own archive: the proxies' call, the neighbours' vote, and both.

A lab's index holds its own labelled crops. On stand-ins for an unseen lab built from the
data here, each stand-in's cells are split (seeded, by cell) into an archive half (indexed
with its labels), a validation quarter and a test quarter of queries; a query's own cell is
never in the archive. For every query:

- proxies: the encoder's nearest proxy (what `predicted` says);
- neighbours: the similarity-weighted vote of its k nearest archived crops (`knn_label`);
- combined: (1 - w) softmax(cosines / T) + w (neighbours' vote shares), the call
  `karyosearch.model.predict.combined_call` makes. w, T and k are chosen on the validation
  queries of all stand-ins together (one setting for every lab): the highest mean
  validation accuracy among the settings that beat the proxies alone on every stand-in's
  validation queries (ties: the least weight on the neighbours, then the lowest T), then
  reported on the test queries of each. Beside it, the weight each stand-in's archive
  would choose for itself (`self_calibrated`: its own crops named, each crop's cell left
  out of its neighbours).

Stand-ins: `NAME=MODEL:DATA[:DEGRADATION]`, e.g. the Q-band encoder against gband612, the
G-band encoder against BioImLab, and degraded gband612 test crops against an archive of
degraded ones (`degrade.py` names). A model's own training cells are left out (`--unseen`
keeps only the test part of the model's split when the data is its training set).

    .venv/bin/python benchmarks/bench_archive_call.py \\
        --stand-in q-on-g=models/bioimlab-proxy-resnext-cbam-64px.pt:../shared/data/gband612 \\
        --stand-in g-on-q=models/gband612-proxy-resnext-cbam-64px.pt:../shared/data/bioimlab
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_robustness import prepared  # noqa: E402
from degrade import DEGRADATIONS  # noqa: E402

from karyosearch.data.datasets import read_dataset  # noqa: E402
from karyosearch.data.splits import split_dataset  # noqa: E402
from karyosearch.evaluation.provenance import same_dataset  # noqa: E402
from karyosearch.model.checkpoint import load_encoder  # noqa: E402
from karyosearch.model.embed import embed_arrays  # noqa: E402
from karyosearch.model.predict import combined_call, neighbour_votes  # noqa: E402
from karyosearch.util.atomic import write_json  # noqa: E402
from karyosearch.util.runtime import describe, timestamp  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "runs" / "cache"
WEIGHTS = [round(0.05 * i, 2) for i in range(21)]
TEMPERATURES = [0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
KS = [5, 8, 16]


@dataclass
class StandIn:
    name: str
    embeddings: np.ndarray  # (n, d) unit vectors
    scores: np.ndarray  # (n, classes) cosines to the proxies
    labels: np.ndarray  # (n,) class index
    side: np.ndarray  # (n,) 0 archive, 1 validation query, 2 test query
    n_cells: int
    cells: np.ndarray | None = None  # (n,) cell of each crop
    nearest: tuple[np.ndarray, np.ndarray] | None = None  # (labels, sims) of the nearest archived


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stand-in", action="append", required=True, metavar="NAME=MODEL:DATA")
    parser.add_argument("--seed", type=int, default=0, help="seed of the cell split")
    parser.add_argument(
        "--json-out", type=Path, default=REPO / "benchmarks" / "results" / "archive_call.json"
    )
    return parser.parse_args(argv)


def embed(model_path: Path, data: Path, degradation: str) -> tuple[StandIn, dict]:
    """Embed the crops a model never trained on (cached under runs/cache)."""
    encoder = load_encoder(model_path)
    dataset = read_dataset(data)
    record = encoder.train_record or {}
    keep = np.arange(len(dataset))
    if same_dataset(record, dataset):  # only the test part of the model's own split
        keep = split_dataset(dataset, record["split"], int(record["seed"])).test
    items = [dataset.items[i] for i in keep]
    key = hashlib.sha1(
        f"{encoder.fingerprint}|{Path(data).resolve()}|{degradation}|{len(items)}".encode()
    ).hexdigest()[:16]
    cache = CACHE / f"{key}.npz"
    if cache.exists():
        saved = np.load(cache)
        emb, scores = saved["embeddings"], saved["scores"]
    else:
        paths = [str(it.path) for it in items]
        cfg = encoder.cfg
        emb, scores = [], []
        for start in range(0, len(paths), 512):
            arrays = prepared(paths[start : start + 512], DEGRADATIONS[degradation],
                              cfg.image_size, cfg.canvas)  # fmt: skip
            e, s = embed_arrays(encoder, arrays)
            emb.append(e)
            scores.append(s)
            print(f"  embedded {start + len(arrays)}/{len(paths)}", flush=True)
        emb, scores = np.concatenate(emb), np.concatenate(scores)
        CACHE.mkdir(parents=True, exist_ok=True)
        np.savez(cache, embeddings=emb, scores=scores)
    cells = np.asarray([it.cell_id or it.path for it in items])
    unique = np.unique(cells)
    order = np.random.default_rng(0).permutation(len(unique))
    side_of = {
        c: (0 if r < len(unique) // 2 else 1 if r < 3 * len(unique) // 4 else 2)
        for c, r in zip(unique[order], range(len(unique)), strict=True)
    }
    side = np.asarray([side_of[c] for c in cells])
    info = {
        "model": str(model_path),
        "fingerprint": encoder.fingerprint,
        "data": str(data),
        "degradation": degradation,
        "crops": len(items),
        "cells": len(unique),
        "archive_crops": int((side == 0).sum()),
        "query_crops": int((side > 0).sum()),
    }
    labels = np.asarray([it.label for it in items])
    return StandIn("", emb, scores, labels, side, len(unique), cells), info


def self_calibrated(s: StandIn, k: int, t: float) -> tuple[float, dict[str, float]]:
    """What an index could choose alone: the weight w whose call names the archive's own
    crops best, each crop's neighbours taken from the other cells of the archive (leave one
    cell out; no query, validation or test crop involved); then the test queries with it."""
    archive = np.flatnonzero(s.side == 0)
    emb, cells = s.embeddings[archive], s.cells[archive]
    labels_nb, sims_nb = [], []
    for block in np.array_split(np.arange(len(archive)), max(1, len(archive) // 2048)):
        sim = emb[block] @ emb.T
        sim[cells[block][:, None] == cells[None, :]] = -np.inf  # own cell left out
        top = np.argpartition(-sim, k, axis=1)[:, :k]
        labels_nb.append(s.labels[archive][top])
        sims_nb.append(np.take_along_axis(sim, top, axis=1))
    votes = neighbour_votes(np.concatenate(labels_nb), np.concatenate(sims_nb), s.scores.shape[1])
    truth, scores = s.labels[archive], s.scores[archive]
    accs = {
        w: float(np.mean(combined_call(scores, votes, w, t).argmax(1) == truth)) for w in WEIGHTS
    }
    w = max(accs, key=lambda x: (accs[x], -x))
    return w, accuracies(s, k, w, t, part=2)


def neighbours(s: StandIn, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and similarities of each query's k nearest archived crops (exact search), most
    similar first; computed once per stand-in for the largest k and sliced for the others."""
    if s.nearest is None or s.nearest[0].shape[1] < k:
        archive = s.embeddings[s.side == 0]
        labels, sims = [], []
        for block in np.array_split(s.embeddings[s.side > 0], max(1, (s.side > 0).sum() // 2048)):
            sim = block @ archive.T
            top = np.argpartition(-sim, k, axis=1)[:, :k]
            top_sims = np.take_along_axis(sim, top, axis=1)
            order = np.argsort(-top_sims, axis=1)
            labels.append(s.labels[s.side == 0][np.take_along_axis(top, order, axis=1)])
            sims.append(np.take_along_axis(top_sims, order, axis=1))
        s.nearest = (np.concatenate(labels), np.concatenate(sims))
    return s.nearest[0][:, :k], s.nearest[1][:, :k]


def accuracies(s: StandIn, k: int, w: float, t: float, part: int) -> dict[str, float]:
    labels_nb, sims_nb = neighbours(s, max(KS))
    labels_nb, sims_nb = labels_nb[:, :k], sims_nb[:, :k]
    query = s.side[s.side > 0] == part
    truth = s.labels[s.side > 0][query]
    scores = s.scores[s.side > 0][query]
    votes = neighbour_votes(labels_nb[query], sims_nb[query], scores.shape[1])
    call = combined_call(scores, votes, w, t)
    return {
        "proxies": float(np.mean(scores.argmax(1) == truth)),
        "neighbours": float(np.mean(votes.argmax(1) == truth)),
        "combined": float(np.mean(call.argmax(1) == truth)),
        "queries": int(query.sum()),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    stand_ins, infos = [], {}
    for spec in args.stand_in:
        name, rest = spec.split("=", 1)
        model, data, *deg = rest.split(":")
        print(f"{name}: embedding {data} with {model} ({deg[0] if deg else 'clean'})", flush=True)
        s, info = embed(Path(model), Path(data), deg[0] if deg else "clean")
        s.name = name
        stand_ins.append(s)
        infos[name] = info
    grid = []  # validation accuracy of every setting, per stand-in and averaged
    proxies = [accuracies(s, KS[0], 0.0, 1.0, part=1)["proxies"] for s in stand_ins]
    for k in KS:
        for t in TEMPERATURES:
            for w in WEIGHTS:
                vals = [accuracies(s, k, w, t, part=1)["combined"] for s in stand_ins]
                beats = all(v > p for v, p in zip(vals, proxies, strict=True))
                grid.append({"k": k, "temperature": t, "weight": w, "val": float(np.mean(vals)),
                             "val_each": vals, "beats_proxies_on_each": beats})  # fmt: skip
    allowed = [g for g in grid if g["beats_proxies_on_each"]] or grid
    best = max(allowed, key=lambda g: (g["val"], -g["weight"], -g["temperature"]))
    print(f"chosen on validation: k {best['k']}, T {best['temperature']}, w {best['weight']} "
          f"(mean validation accuracy {100 * best['val']:.2f}%; "
          f"{len(allowed)} of {len(grid)} beat the proxies on every stand-in)")  # fmt: skip
    results = {}
    for s in stand_ins:
        val = accuracies(s, best["k"], best["weight"], best["temperature"], part=1)
        test = accuracies(s, best["k"], best["weight"], best["temperature"], part=2)
        w_self, test_self = self_calibrated(s, best["k"], best["temperature"])
        results[s.name] = {**infos[s.name], "validation": val, "test": test,
                           "self_calibrated": {"weight": w_self, "test": test_self}}  # fmt: skip
        print(f"{s.name:14s} self-calibrated w {w_self}: test combined "
              f"{100 * test_self['combined']:.2f}%")  # fmt: skip
        print(f"{s.name:14s} test ({test['queries']} queries): proxies {100 * test['proxies']:.2f}%"
              f"  neighbours {100 * test['neighbours']:.2f}%  combined "
              f"{100 * test['combined']:.2f}%")  # fmt: skip
    out = {
        "benchmark": "archive_call",
        "command": " ".join(sys.argv),
        "chosen": best,
        "chosen_on": "validation queries: the highest mean accuracy over the stand-ins among the "
        "settings that beat the proxies alone on each (ties: least weight, then lowest T)",
        "validation_proxies": dict(zip([s.name for s in stand_ins], proxies, strict=True)),
        "stand_ins": results,
        "grid": grid,
        "machine": describe(),
        "created": timestamp(),
    }
    print(f"saved {write_json(args.json_out, out)}")


if __name__ == "__main__":
    main()
