"""benchmarks/judge_candidate.py on fake runs: the rule's (a)-(c), and no test figure printed."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from .conftest import load_benchmark

TEST_ACCURACY = 0.12345  # a test figure no verdict may read or print


@pytest.fixture(scope="module")
def judge() -> ModuleType:
    return load_benchmark("judge_candidate")


def write_runs(folder: Path, name: str, vals: list[tuple[float, float]]) -> None:
    for seed, (acc, loss) in enumerate(vals):
        record = {
            "accuracy": TEST_ACCURACY,
            "train": {"val_accuracy": acc, "val_loss": loss, "best_epoch": 10 + seed},
        }
        (folder / f"{name}-s{seed}.json").write_text(json.dumps(record))


def write_robustness(path: Path, accuracies: list[float], part: str = "val") -> Path:
    clean = accuracies[0]
    results = [
        {"degradation": f"d{i}", "accuracy": a, "accuracy_drop_points": 100 * (clean - a)}
        for i, a in enumerate(accuracies)
    ]
    path.write_text(json.dumps({"part": part, "results": results}))
    return path


def run(judge: ModuleType, tmp_path: Path, capsys, *extra: str) -> str:
    judge.main(
        ["--candidate", "cand-s{seed}", "--baseline", "base-s{seed}", "--runs", str(tmp_path)]
        + list(extra)
    )
    out = capsys.readouterr().out
    assert "12.3" not in out  # never the test accuracy
    return out


def test_a_better_mean_and_robust_best_seed_ships(judge, tmp_path: Path, capsys) -> None:
    write_runs(tmp_path, "cand", [(0.96, 0.2), (0.97, 0.15), (0.97, 0.1)])
    write_runs(tmp_path, "base", [(0.96, 0.2), (0.96, 0.2), (0.96, 0.2)])
    out = run(judge, tmp_path, capsys)
    assert "(a) mean best validation 96.67% against 96.00%: passes" in out
    assert "(b) the seed it would ship: 2" in out  # a tie on accuracy: the lower loss
    assert "(c) needs" in out and "verdict" not in out
    mine = write_robustness(tmp_path / "c.json", [0.97, 0.965, 0.96])
    shipped = write_robustness(tmp_path / "b.json", [0.96, 0.95, 0.945])
    out = run(
        judge, tmp_path, capsys, "--robustness", str(mine), "--baseline-robustness", str(shipped)
    )
    assert "(c) degraded validation mean 96.50% (at least 95.17%)" in out
    assert "verdict: ships" in out


def test_a_drop_beyond_the_shipped_worst_fails_c(judge, tmp_path: Path, capsys) -> None:
    write_runs(tmp_path, "cand", [(0.97, 0.2)] * 3)
    write_runs(tmp_path, "base", [(0.96, 0.2)] * 3)
    mine = write_robustness(tmp_path / "c.json", [0.99, 0.99, 0.96])  # mean high, drop 3
    shipped = write_robustness(tmp_path / "b.json", [0.96, 0.95, 0.945])  # worst drop 1.5
    out = run(
        judge, tmp_path, capsys, "--robustness", str(mine), "--baseline-robustness", str(shipped)
    )
    assert "(c)" in out and ": fails" in out and "verdict: not shipped" in out


def test_the_rules_own_bound_replaces_the_shipped_worst(judge, tmp_path: Path, capsys) -> None:
    write_runs(tmp_path, "cand", [(0.97, 0.2)] * 3)
    write_runs(tmp_path, "base", [(0.96, 0.2)] * 3)
    mine = write_robustness(tmp_path / "c.json", [0.98, 0.98, 0.965])  # worst drop 1.5
    shipped = write_robustness(tmp_path / "b.json", [0.96, 0.955, 0.95])  # worst drop 1.0
    both = ["--robustness", str(mine), "--baseline-robustness", str(shipped)]
    assert "verdict: not shipped" in run(judge, tmp_path, capsys, *both)
    out = run(judge, tmp_path, capsys, *both, "--max-drop", "1.6")
    assert "worst drop 1.50 points, d2 (at most 1.60, the rule's bound): passes" in out
    assert "verdict: ships" in out
    out = run(judge, tmp_path, capsys, *both, "--max-drop", "1.4")
    assert "verdict: not shipped" in out


def test_a_lower_mean_fails_a(judge, tmp_path: Path, capsys) -> None:
    write_runs(tmp_path, "cand", [(0.96, 0.2)] * 3)
    write_runs(tmp_path, "base", [(0.96, 0.2), (0.96, 0.2), (0.97, 0.2)])
    mine = write_robustness(tmp_path / "c.json", [0.97, 0.97])
    shipped = write_robustness(tmp_path / "b.json", [0.96, 0.95])
    out = run(
        judge, tmp_path, capsys, "--robustness", str(mine), "--baseline-robustness", str(shipped)
    )
    assert "(a) mean best validation 96.00% against 96.33%: fails" in out
    assert "verdict: not shipped" in out


def test_refuses_robustness_measured_on_test(judge, tmp_path: Path) -> None:
    write_runs(tmp_path, "cand", [(0.97, 0.2)] * 3)
    write_runs(tmp_path, "base", [(0.96, 0.2)] * 3)
    on_test = write_robustness(tmp_path / "t.json", [0.97, 0.96], part="test")
    shipped = write_robustness(tmp_path / "b.json", [0.96, 0.95])
    with pytest.raises(SystemExit, match="the rule reads val"):
        judge.main(
            ["--candidate", "cand-s{seed}", "--baseline", "base-s{seed}", "--runs", str(tmp_path)]
            + ["--robustness", str(on_test), "--baseline-robustness", str(shipped)]
        )


def test_a_missing_run_is_one_error_line(judge, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no such run"):
        judge.main(["--candidate", "x-s{seed}", "--baseline", "y-s{seed}", "--runs", str(tmp_path)])
