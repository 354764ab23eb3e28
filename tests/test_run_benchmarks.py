"""benchmarks/run_benchmarks.py's plan: run names, what it skips, and `--set` recipe changes."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from .conftest import load_benchmark


@pytest.fixture(scope="module")
def driver() -> Iterator[ModuleType]:
    yield load_benchmark("run_benchmarks")
    del sys.modules["run_benchmarks"]


def test_a_recipe_change_names_its_runs_and_reaches_train(
    driver: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = driver.Run("gband612", Path("g"), "proxy-resnext-cbam", "karyo", 0, "default")
    changed = driver.Run(
        "gband612", Path("g"), "proxy-resnext-cbam", "karyo", 0, "default",
        epochs=4, image_size=96, init=("g21", Path("m.pt")), overrides=("lr=2e-4",),
    )  # fmt: skip
    assert plain.name == "gband612-proxy-resnext-cbam-karyo-s0-default"
    assert (
        changed.name == "gband612-proxy-resnext-cbam-karyo-s0-default-e4-px96-init_g21-set_lr2e-4"
    )
    commands: list[list[str]] = []

    def failing_train(cmd: list[str], log: Path) -> tuple[int, float]:
        commands.append(cmd)
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("stopped by the test\n")
        return 1, 0.0

    monkeypatch.setattr(driver, "run_logged", failing_train)
    args = argparse.Namespace(
        runs_dir=tmp_path / "runs", results_dir=tmp_path / "results", device="cpu",
        max_minutes=None, batch_size=64, figures=False,
    )  # fmt: skip
    assert driver.do_run(changed, args) is False
    train = commands[0]
    assert train[train.index("--set") + 1] == "lr=2e-4"
    assert train[train.index("--init") + 1] == "m.pt"


def test_dry_run_plans_every_seed_and_skips_those_with_a_json(
    driver: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    results.mkdir()
    done = "bioimlab-proxy-resnext-cbam-cell-s1-default-set_lr0.001_ema0.99"
    (results / f"{done}.json").write_text(json.dumps({"accuracy": 0.9}))
    argv = ["--data", "bioimlab=/nowhere", "--arch", "proxy-resnext-cbam", "--split", "cell"]
    argv += ["--seeds", "0-2", "--set", "lr=0.001", "--set", "ema=0.99"]
    argv += ["--results-dir", str(results), "--runs-dir", str(tmp_path / "runs"), "--dry-run"]
    assert driver.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["[todo]", "[skip]", "[todo]"]
    assert lines[1].split()[1] == done


def test_a_recipe_change_that_is_no_literal_is_refused(
    driver: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        driver.main(["--data", "x=/nowhere", "--set", "lr", "--dry-run"])
    assert exit_info.value.code == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_a_joint_dataset_names_its_runs_and_reaches_train(
    driver: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    argv = ["--data", "bioimlab=/b", "--arch", "proxy-resnext-cbam", "--split", "paper"]
    argv += ["--seeds", "1", "--also", "gband612=/g", "--also-split", "karyo", "--also-seed", "0"]
    argv += ["--results-dir", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs")]
    commands: list[list[str]] = []
    monkeypatch.setattr(driver, "run_logged", lambda cmd, log: (commands.append(cmd), (1, 0.0))[1])
    assert driver.main(argv) == 1  # the stand-in training fails; its command is what counts
    name = "bioimlab-proxy-resnext-cbam-paper-s1-default-also_gband612karyos0"
    assert name in capsys.readouterr().out
    train = commands[0]
    assert train[train.index("--also") + 1] == "/g"
    assert train[train.index("--also-split") + 1] == "karyo"
    assert train[train.index("--also-seed") + 1] == "0"
    with pytest.raises(SystemExit):
        driver.main(["--data", "x=/nowhere", "--also-seed", "0", "--dry-run"])
