"""Train and bench networks over datasets, splits, seeds and presets; resumable.

Each run is `karyosearch train ... --out runs/<name>/model.pt` then
`karyosearch bench ... --json benchmarks/results/runs/<name>.json`. A run whose JSON exists
is skipped, so the driver can be stopped and started again; a run whose training was cut
short continues with `--resume`. Afterwards `benchmarks/make_table.py` summarises the JSONs.

Example (the paper's comparison on BioImLab, both splits, 5 seeds):

    python benchmarks/run_benchmarks.py --data bioimlab=../shared/data/bioimlab \\
        --arch resnext --arch proxy-resnext --arch proxy-resnext-cbam \\
        --split paper --split cell --seeds 0-4 --preset default

A recipe field changed for every run (`--set lr=2e-4`, as `karyosearch train --set`) goes into
the run names (`...-set_lr2e-4`) and the JSON (`run.recipe_overrides`), so that the table
never averages it with the preset's own recipe. A second dataset trained on jointly (`--also
gband612=../shared/data/gband612 --also-split karyo --also-seed 0`, as `karyosearch train
--also`) goes into the names too (`...-also_gband612karyos0`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from karyosearch.errors import UserError  # noqa: E402
from karyosearch.train.recipe import parse_overrides  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "runs"
RUNS = REPO / "runs"


@dataclass(frozen=True)
class Run:
    """One (dataset, network, split, seed, preset) training and benchmark."""

    dataset: str  # short dataset name used in run names and the table
    data: Path  # dataset folder or manifest
    arch: str
    split: str
    seed: int
    preset: str
    epochs: int | None = None  # overrides the preset
    image_size: int | None = None  # overrides the preset
    init: tuple[str, Path] | None = None  # (short name, checkpoint) to start from
    overrides: tuple[str, ...] = ()  # recipe fields changed, KEY=VALUE as `train --set` takes
    # (short name, dataset, split or None, seed or None) trained on jointly (`train --also`)
    also: tuple[str, Path, str | None, int | None] | None = None

    @property
    def name(self) -> str:
        parts = [self.dataset, self.arch, self.split, f"s{self.seed}", self.preset]
        if self.epochs is not None:
            parts.append(f"e{self.epochs}")
        if self.image_size is not None:
            parts.append(f"px{self.image_size}")
        if self.init is not None:
            parts.append(f"init_{self.init[0]}")
        if self.overrides:
            kept = (re.sub(r"[^A-Za-z0-9.+-]", "", o) for o in self.overrides)
            parts.append("set_" + "_".join(kept))
        if self.also is not None:
            name, _, split, seed = self.also
            parts.append(f"also_{name}{split or ''}{'' if seed is None else f's{seed}'}")
        return "-".join(parts)


def parse_seeds(text: str) -> list[int]:
    """'0-4' -> [0, 1, 2, 3, 4]; '0,3,7' -> [0, 3, 7]."""
    seeds: list[int] = []
    for part in text.split(","):
        if "-" in part:
            lo, hi = part.split("-", 1)
            seeds.extend(range(int(lo), int(hi) + 1))
        elif part.strip():
            seeds.append(int(part))
    return seeds


def parse_data(spec: str) -> tuple[str, Path]:
    """'NAME=PATH' or 'PATH' (named after its folder)."""
    name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
    p = Path(path).expanduser()
    return (name or p.name), p


def plan(args: argparse.Namespace) -> list[Run]:
    datasets = [parse_data(d) for d in args.data]
    init = parse_data(args.init) if args.init else None
    sets = tuple(args.set or ())
    also = (*parse_data(args.also), args.also_split, args.also_seed) if args.also else None
    return [
        Run(name, path, arch, split, seed, preset, args.epochs, args.image_size, init, sets, also)
        for (name, path), arch, split, preset, seed in itertools.product(
            datasets, args.arch, args.split, args.preset, parse_seeds(args.seeds)
        )
    ]


def karyosearch(*args: str) -> list[str]:
    return [sys.executable, "-m", "karyosearch.cli", *args]


def run_logged(cmd: list[str], log: Path) -> tuple[int, float]:
    """Run `cmd` with output appended to `log`; (exit status, wall seconds)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log.open("a", encoding="utf-8") as fh:
        fh.write(f"\n$ {shlex.join(cmd)}\n")
        fh.flush()
        rc = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO)
    return rc, time.monotonic() - started


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def do_run(run: Run, args: argparse.Namespace) -> bool:
    """Train (or finish training) and bench one run; True when its JSON was written."""
    out_dir = args.runs_dir / run.name
    model, done, log = out_dir / "model.pt", out_dir / "train.done", out_dir / "log.txt"
    result = args.results_dir / f"{run.name}.json"
    train_cmd = karyosearch(
        "train",
        "--data",
        str(run.data),
        "--arch",
        run.arch,
        "--out",
        str(model),
        "--split",
        run.split,
        "--seed",
        str(run.seed),
        "--preset",
        run.preset,
        "--device",
        args.device,
    )
    if run.epochs is not None:
        train_cmd += ["--epochs", str(run.epochs)]
    if run.image_size is not None:
        train_cmd += ["--image-size", str(run.image_size)]
    if args.max_minutes is not None:
        train_cmd += ["--max-minutes", str(args.max_minutes)]
    if run.init is not None:
        train_cmd += ["--init", str(run.init[1])]
    for item in run.overrides:
        train_cmd += ["--set", item]
    if run.also is not None:
        train_cmd += ["--also", str(run.also[1])]
        if run.also[2] is not None:
            train_cmd += ["--also-split", run.also[2]]
        if run.also[3] is not None:
            train_cmd += ["--also-seed", str(run.also[3])]
    train_wall = 0.0
    if not done.exists():
        if model.with_name(model.name + ".last").exists():
            train_cmd.append("--resume")
        print(f"[train] {run.name}", flush=True)
        rc, train_wall = run_logged(train_cmd, log)
        if rc != 0:
            print(f"[fail]  {run.name}: train exited {rc}; last lines of {log}:\n{tail(log)}")
            return False
        done.write_text(json.dumps({"wall_seconds": train_wall}) + "\n", encoding="utf-8")
    else:
        try:
            train_wall = float(json.loads(done.read_text(encoding="utf-8"))["wall_seconds"])
        except (OSError, ValueError, KeyError):
            train_wall = float("nan")

    tmp = result.with_name(f".{result.name}.tmp-{os.getpid()}")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    bench_cmd = karyosearch(
        "bench",
        "--data",
        str(run.data),
        "--model",
        str(model),
        "--json",
        str(tmp),
        "--device",
        args.device,
        "--batch-size",
        str(args.batch_size),
    )
    if args.figures:
        bench_cmd += ["--figures", str(out_dir / "figures")]
    print(f"[bench] {run.name}", flush=True)
    rc, bench_wall = run_logged(bench_cmd, log)
    if rc != 0 or not tmp.exists():
        print(f"[fail]  {run.name}: bench exited {rc}; last lines of {log}:\n{tail(log)}")
        tmp.unlink(missing_ok=True)
        return False
    record = json.loads(tmp.read_text(encoding="utf-8"))
    record["run"] = {
        "name": run.name,
        "dataset_name": run.dataset,
        "epochs_override": run.epochs,
        "image_size_override": run.image_size,
        "init": str(run.init[1]) if run.init is not None else None,
        "recipe_overrides": parse_overrides(list(run.overrides)),
        "also": str(run.also[1]) if run.also is not None else None,
        "train_command": shlex.join(train_cmd),
        "train_wall_seconds": train_wall if train_wall == train_wall else None,
        "bench_wall_seconds": bench_wall,
        "host": platform.node(),
    }
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, result)
    # Validation only on the console: recipes are chosen on it, and a runner that printed
    # test figures as each seed ends would show them before the choice (they are in `result`).
    trained = record.get("train") or {}
    val = trained.get("val_accuracy")
    val_text = f"{100 * val:.2f}% (epoch {trained.get('best_epoch')})" if val is not None else "?"
    print(f"[done]  {run.name}: best validation {val_text}; test figures in {result}", flush=True)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", action="append", required=True, help="NAME=PATH or PATH; repeatable")
    ap.add_argument("--arch", action="append", help="repeatable (default: all three networks)")
    ap.add_argument("--split", action="append", help="paper and/or cell (default: both)")
    ap.add_argument("--seeds", default="0-2", help="e.g. 0-4 or 0,3,7 (default 0-2)")
    ap.add_argument("--preset", action="append", help="default and/or paper (default: default)")
    ap.add_argument("--epochs", type=int, help="override the preset's epochs")
    ap.add_argument("--image-size", type=int, help="override the preset's image size")
    ap.add_argument(
        "--init",
        help="NAME=CHECKPOINT: start every run from these weights (run names end init_NAME)",
    )
    ap.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="change one recipe field for every run, as `karyosearch train --set` (repeatable; "
        "run names end set_KEYVALUE)",
    )
    ap.add_argument(
        "--also",
        help="NAME=DATA: train every run jointly on this second dataset, as `karyosearch "
        "train --also` (run names end also_NAME, with --also-split and --also-seed)",
    )
    ap.add_argument("--also-split", help="the --also dataset's split (default: each run's)")
    ap.add_argument("--also-seed", type=int, help="the --also dataset's seed (default: each run's)")
    ap.add_argument("--max-minutes", type=float, help="per-run training wall-time cap")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--batch-size", type=int, default=64, help="bench batch size")
    ap.add_argument("--figures", action="store_true", help="also write figures per run")
    ap.add_argument("--runs-dir", type=Path, default=RUNS, help="checkpoints and logs")
    ap.add_argument("--results-dir", type=Path, default=RESULTS, help="one JSON per run")
    ap.add_argument("--dry-run", action="store_true", help="list the runs and what would happen")
    ap.add_argument("--stop-on-failure", action="store_true", help="stop at the first failed run")
    args = ap.parse_args(argv)
    if args.init and "=" not in args.init:
        ap.error("--init takes NAME=CHECKPOINT (NAME goes into the run names)")
    if args.also and "=" not in args.also:
        ap.error("--also takes NAME=DATA (NAME goes into the run names)")
    if not args.also and (args.also_split or args.also_seed is not None):
        ap.error("--also-split and --also-seed need --also")
    try:
        parse_overrides(args.set or [])
    except UserError as err:
        ap.error(str(err))
    args.arch = args.arch or ["resnext", "proxy-resnext", "proxy-resnext-cbam"]
    args.split = args.split or ["paper", "cell"]
    args.preset = args.preset or ["default"]

    runs = plan(args)
    failed: list[str] = []
    for i, run in enumerate(runs, 1):
        result = args.results_dir / f"{run.name}.json"
        if result.exists():
            print(f"[skip]  {run.name} ({i}/{len(runs)}): {result} exists")
            continue
        if args.dry_run:
            print(f"[todo]  {run.name} ({i}/{len(runs)})")
            continue
        if not do_run(run, args):
            failed.append(run.name)
            if args.stop_on_failure:
                break
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
