"""Learning from the lab's own archive: the proxies' call, the neighbours' vote, and both.

A lab's index holds its own labelled crops. On stand-ins for an unseen lab built from the
data here, each stand-in's cells are split (seeded, by cell) into an archive half (indexed
with its labels), a validation quarter and a test quarter of queries; a query's own cell is
never in the archive. For every query:

- proxies: the encoder's nearest proxy (what `predicted` says);
- neighbours: the similarity-weighted vote of its k nearest archived crops (`knn_label`);
- the fixed setting (`grid`, `chosen`): (1 - w) softmax(cosines / T) + w (neighbours'
  vote shares), one w, T and k for every lab, chosen on the validation queries of all
  stand-ins together: the highest mean validation accuracy among the settings that beat the
  proxies alone on every stand-in's validation queries (ties: the least weight on the
  neighbours, then the lowest T), then reported on the test queries of each. It is what
  an index that cannot choose for itself uses (`model.predict.ArchiveSetting`).
- the index's own setting (`index_chooses`), the call `karyosearch` makes: the archive
  half written as an index folder, which chooses k, T, w and the pull towards its class
  means on its own crops (`search.archive.choose`: each crop named from the other cells
  only; no query crop involved), every query then answered by `SearchIndex.query_vectors`.

Stand-ins: `NAME=MODEL:DATA[:DEGRADATION]`, e.g. the Q-band encoder against gband612, the
G-band encoder against BioImLab, and degraded gband612 test crops against an archive of
degraded ones (`degrade.py` names). A model's own training cells are left out (`--unseen`
keeps only the test part of the model's split when the data is its training set).

    .venv/bin/python benchmarks/bench_archive_call.py \\
        --stand-in q-on-g=models/bioimlab-proxy-resnext-cbam-128px.pt:../shared/data/gband612 \\
        --stand-in g-on-q=models/gband612-proxy-resnext-cbam-96px.pt:../shared/data/bioimlab
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_robustness import prepared  # noqa: E402
from degrade import DEGRADATIONS  # noqa: E402

from karyosearch.data.datasets import read_dataset  # noqa: E402
from karyosearch.data.splits import split_dataset  # noqa: E402
from karyosearch.evaluation.provenance import same_dataset  # noqa: E402
from karyosearch.labels import CLASS_NAMES  # noqa: E402
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
                              cfg.image_size, cfg.canvas, cfg.preprocess_version)  # fmt: skip
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


def read_stand_in(spec: str) -> tuple[StandIn, dict]:
    """The stand-in `NAME=MODEL:DATA[:DEGRADATION]` (`--stand-in`), embedded (`embed`)."""
    name, rest = spec.split("=", 1)
    model, data, *deg = rest.split(":")
    print(f"{name}: embedding {data} with {model} ({deg[0] if deg else 'clean'})", flush=True)
    s, info = embed(Path(model), Path(data), deg[0] if deg else "clean")
    s.name = name
    return s, info


def index_call(s: StandIn, model_path: Path) -> dict:
    """The call `karyosearch` itself makes with an index of the stand-in's archive: the
    archive half written as an index folder, the index choosing its own setting on its own
    crops (`search.archive.choose`: whole cells sampled, each crop named from the other cells
    only; no query crop involved), then every query answered by `SearchIndex.query_vectors`."""
    import tempfile

    from karyosearch.data.image import PREPROCESS_VERSION
    from karyosearch.search.archive import choose, class_means, encoder_proxies
    from karyosearch.search.engine import SearchIndex
    from karyosearch.search.faiss_index import build_faiss
    from karyosearch.search.folder import IndexCard, read_index_folder
    from karyosearch.search.segments import write_index_folder
    from karyosearch.search.store import Rows

    encoder = load_encoder(model_path)
    archive = np.flatnonzero(s.side == 0)
    n = len(archive)
    rows = Rows(
        np.arange(n, dtype=np.int64),
        np.ascontiguousarray(s.embeddings[archive], np.float32),
        s.labels[archive].astype(np.int8),
        [f"/archive/{i}.png" for i in range(n)],
        [str(c) for c in s.cells[archive]],
        [""] * n,
        ["0" * 40] * n,
    )
    card = IndexCard(encoder.fingerprint, encoder.cfg.arch, encoder.cfg.image_size,
                     PREPROCESS_VERSION, factory="Flat")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        write_index_folder(Path(tmp) / "idx", card, build_faiss("Flat", rows.embeddings, rows.ids),
                           rows)  # fmt: skip
        folder = read_index_folder(Path(tmp) / "idx")
        proxies = encoder_proxies(encoder)
        start = time.perf_counter()
        chosen = choose(folder, proxies)
        seconds = time.perf_counter() - start
        out = {"setting": chosen, "choose_seconds": round(seconds, 2)}
        # the method study, on validation queries only: the other criterion, the class means
        rival = choose(folder, proxies, criterion="log_likelihood")
        q = np.flatnonzero(s.side == 1)
        means = class_means(folder)
        cosines = s.embeddings[q] @ means.T
        out["validation_study"] = {
            "chosen_by_log_likelihood": {
                "setting": rival,
                "call": calls_accuracy(SearchIndex(folder), rival, s, q),
            },
            "class_means_alone": float(np.mean(cosines.argmax(1) == s.labels[q])),
            "proxies_plus_class_means_b1": float(
                np.mean((s.scores[q] + cosines).argmax(1) == s.labels[q])
            ),
        }
        for part, name in ((1, "validation"), (2, "test")):
            q = np.flatnonzero(s.side == part)
            out[name] = {
                "proxies": float(np.mean(s.scores[q].argmax(1) == s.labels[q])),
                "call": calls_accuracy(SearchIndex(folder), chosen, s, q),
                "queries": len(q),
            }
    return out


def calls_accuracy(search, setting: dict, s: StandIn, q: np.ndarray) -> float:  # noqa: ANN001
    """Accuracy of the archive call `query` makes for the crops `q` under the card's setting."""
    search.folder.card.archive = setting
    results = search.query_vectors(s.embeddings[q], k=1, scores=s.scores[q])
    calls = np.asarray([CLASS_NAMES.index(r.call.label) for r in results])
    return float(np.mean(calls == s.labels[q]))


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
        s, info = read_stand_in(spec)
        infos[s.name] = info
        stand_ins.append(s)
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
        own = index_call(s, Path(infos[s.name]["model"]))
        results[s.name] = {**infos[s.name], "validation": val, "test": test,
                           "index_chooses": own}  # fmt: skip
        v, t = own["validation"], own["test"]
        print(f"{s.name:14s} the index's own setting {own['setting']}: validation call "
              f"{100 * v['call']:.2f}%, test call {100 * t['call']:.2f}% "
              f"(proxies {100 * t['proxies']:.2f}%)")  # fmt: skip
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
