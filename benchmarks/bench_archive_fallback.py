"""The archive call of an index that cannot choose its own setting: small archives, and
archives without cell ids.

An index chooses its archive setting by naming its own crops from their *other* cells
(`search.archive.choose`), which needs at least MIN_CELLS labelled cells. A lab starting out
(a cell or three) or an archive whose crops carry no cell id (a plain `<class>/<image>`
folder) cannot, and takes a fallback. One fallback does not serve both kinds of archive
(`bench_archive_call.py`): of another stain, the neighbours should decide; of the encoder's
own stain, the proxies are right and a small archive's few neighbours only add noise. What an
archive can always measure is how many of its own labelled crops the proxies name right (no
cell needed: the proxies never saw them), so the fallback is one of two settings by that
share (`model.predict.fallback_setting`).

This benchmark chooses the two on validation queries: on the stand-ins of
`bench_archive_call.py` (each stand-in's cells split into an archive half, a validation and a
test quarter), archives of 1, 2 and 3 whole cells drawn from the archive half (DRAWS seeded
draws each) and the whole half without its cell ids. For each archive the share of its crops
the proxies name right puts it on the own-stain or the other-stain side of
`FALLBACK_PROXY_SHARE`; on each side, the setting of the grid with the highest mean validation
accuracy over its archives (ties: the least weight on the neighbours) is chosen. Test
queries then give each side's accuracy under the proxies alone, the single fixed setting used
before, and the chosen one.

    Q=models/bioimlab-proxy-resnext-cbam-128px.pt G=models/gband612-proxy-resnext-cbam-96px.pt
    .venv/bin/python benchmarks/bench_archive_fallback.py \\
        --stand-in q-on-gband=$Q:../shared/data/gband612 \\
        --stand-in g-on-bioimlab=$G:../shared/data/bioimlab \\
        --stand-in g-on-gband=$G:../shared/data/gband612 \\
        "--stand-in=g-on-gband-scale0.5=$G:../shared/data/gband612:scale 0.5"

(The G-band encoder's own data: only its test patients' cells.) The library's constants
(`model.predict.OWN_STAIN_FALLBACK`, `OTHER_STAIN_FALLBACK`) are what this chose; it says
when they differ.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_archive_call import KS, TEMPERATURES, WEIGHTS, StandIn, read_stand_in  # noqa: E402

from karyosearch.labels import CLASS_NAMES  # noqa: E402
from karyosearch.model.predict import (  # noqa: E402
    FALLBACK_PROXY_SHARE,
    OTHER_STAIN_FALLBACK,
    OWN_STAIN_FALLBACK,
    ArchiveSetting,
    combined_call,
    neighbour_votes,
)
from karyosearch.util.atomic import write_json  # noqa: E402
from karyosearch.util.runtime import describe, timestamp  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SIZES = (1, 2, 3)  # whole cells in a small archive (an index needs 4 to choose its own)
DRAWS = 10  # seeded draws of each size


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stand-in", action="append", required=True, metavar="NAME=MODEL:DATA")
    parser.add_argument("--seed", type=int, default=0, help="seed of the archive draws")
    parser.add_argument(
        "--json-out",
        type=Path,
        default=REPO / "benchmarks" / "results" / "archive_fallback.json",
    )
    return parser.parse_args(argv)


def archives(s: StandIn, rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """(name, rows) of the archives drawn from the stand-in's archive half."""
    half = np.flatnonzero(s.side == 0)
    cells = np.unique(s.cells[half])
    out = []
    for size in SIZES:
        for _ in range(DRAWS):
            picked = rng.choice(cells, size, replace=False)
            out.append((f"{size} cell{'s' * (size > 1)}", half[np.isin(s.cells[half], picked)]))
    out.append(("half, no cell ids", half))
    return out


def nearest(s: StandIn, rows: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels and similarities of each query's max(KS) nearest crops of the archive `rows`,
    most similar first (label -1 past the archive's end)."""
    k = max(KS)
    labels = np.full((len(queries), k), -1, np.int64)
    sims = np.zeros((len(queries), k))
    for block in np.array_split(np.arange(len(queries)), max(1, len(queries) // 2048)):
        sim = s.embeddings[queries[block]] @ s.embeddings[rows].T
        top = np.argsort(-sim, axis=1)[:, :k]
        labels[block, : top.shape[1]] = s.labels[rows][top]
        sims[block, : top.shape[1]] = np.take_along_axis(sim, top, axis=1)
    return labels, sims


def accuracy(s: StandIn, queries: np.ndarray, nb: tuple, setting: tuple | None) -> float:
    """Accuracy on `queries` of the proxies (setting None) or of the call (k, T, w)."""
    scores, truth = s.scores[queries], s.labels[queries]
    if setting is None:
        return float(np.mean(scores.argmax(1) == truth))
    k, t, w = setting
    votes = neighbour_votes(nb[0][:, :k], nb[1][:, :k], len(CLASS_NAMES))
    return float(np.mean(combined_call(scores, votes, w, t).argmax(1) == truth))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    grid = [(k, t, w) for k in KS for t in TEMPERATURES for w in WEIGHTS]
    fixed = ArchiveSetting()
    before = (fixed.k, fixed.temperature, fixed.weight)  # the single fixed setting until now
    cases = []  # one per (stand-in, archive)
    infos = {}
    for spec in args.stand_in:
        s, info = read_stand_in(spec)
        name = s.name
        infos[name] = info
        val, test = np.flatnonzero(s.side == 1), np.flatnonzero(s.side == 2)
        for label, rows in archives(s, rng):
            share = float(np.mean(s.scores[rows].argmax(1) == s.labels[rows]))
            nb_val, nb_test = nearest(s, rows, val), nearest(s, rows, test)
            cases.append({
                "stand_in": name, "archive": label, "crops": len(rows), "proxy_share": share,
                "own_stain": share >= FALLBACK_PROXY_SHARE,
                "val": [accuracy(s, val, nb_val, g) for g in grid],
                "test": {"proxies": accuracy(s, test, nb_test, None),
                         "before": accuracy(s, test, nb_test, before)},
                "test_queries": (s, test, nb_test),
                "val_proxies": accuracy(s, val, nb_val, None),
            })  # fmt: skip
    sides = {}
    for own in (True, False):
        mine = [c for c in cases if c["own_stain"] == own]
        if not mine:
            continue
        mean_val = np.mean([c["val"] for c in mine], axis=0)
        best = max(range(len(grid)), key=lambda i: (round(mean_val[i], 12), -grid[i][2]))
        k, t, w = grid[best]
        for c in mine:
            c["test"]["chosen"] = accuracy(*c["test_queries"], grid[best])
        sides["own stain" if own else "other stain"] = {
            "chosen": {"k": k, "temperature": t, "weight": w, "val": float(mean_val[best])},
            "val_proxies": float(np.mean([c["val_proxies"] for c in mine])),
            "val_before": float(mean_val[grid.index(before)]) if before in grid else None,
            "archives": len(mine),
        }
    summary = {}  # per stand-in and archive size: test means over the draws
    for c in cases:
        key = f"{c['stand_in']} | {c['archive']}"
        row = summary.setdefault(key, {"own_stain": [], "proxy_share": [], "proxies": [],
                                       "before": [], "chosen": []})  # fmt: skip
        row["own_stain"].append(c["own_stain"])
        row["proxy_share"].append(c["proxy_share"])
        for part in ("proxies", "before", "chosen"):
            row[part].append(c["test"][part])
    table = {}
    for key, row in summary.items():
        table[key] = {
            "archives": len(row["proxies"]),
            "judged_own_stain": int(sum(row["own_stain"])),
            "proxy_share_min": float(min(row["proxy_share"])),
            "proxy_share_max": float(max(row["proxy_share"])),
            **{f"test_{p}": float(np.mean(row[p])) for p in ("proxies", "before", "chosen")},
        }
        t = table[key]
        print(f"{key:40s} proxies {100 * t['test_proxies']:5.1f}  fixed before "
              f"{100 * t['test_before']:5.1f}  chosen {100 * t['test_chosen']:5.1f}  "
              f"(share {t['proxy_share_min']:.2f}-{t['proxy_share_max']:.2f})")  # fmt: skip
    library = {"own stain": OWN_STAIN_FALLBACK, "other stain": OTHER_STAIN_FALLBACK}
    for side, entry in sides.items():
        c = entry["chosen"]
        entry["library"] = list(library[side])
        same = (c["k"], c["temperature"], c["weight"]) == library[side]
        verdict = "the library's" if same else f"the library has {library[side]}: update it"
        print(f"{side}: chosen k {c['k']}, T {c['temperature']}, w {c['weight']} (mean validation "
              f"{100 * c['val']:.2f}%, proxies alone {100 * entry['val_proxies']:.2f}%); "
              f"{verdict}")  # fmt: skip
    out = {
        "benchmark": "archive_fallback",
        "command": " ".join(sys.argv),
        "threshold": FALLBACK_PROXY_SHARE,
        "sizes": list(SIZES),
        "draws": DRAWS,
        "chosen_on": "validation queries: on each side of the threshold, the highest mean "
        "accuracy over its archives (ties: least weight on the neighbours)",
        "sides": sides,
        "test": table,
        "stand_ins": infos,
        "machine": describe(),
        "created": timestamp(),
    }
    print(f"saved {write_json(args.json_out, out)}")


if __name__ == "__main__":
    main()
