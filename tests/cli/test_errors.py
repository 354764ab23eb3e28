"""What every command does with bad input, through typer's CliRunner: corrupt or broken
weights, and missing paths. One `error:` line on stderr, exit status 1, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from karyosearch.cli import app
from karyosearch.model.checkpoint import save_checkpoint
from karyosearch.model.encoder import EncoderConfig, build_encoder

from ..conftest import one_error_line
from ..evaluation.test_bench import make_folder_dataset
from ..model.test_checkpoint import corrupt_copy
from .test_karyotype import make_cell

runner = CliRunner()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A dataset, a good checkpoint that 'trained' on it, an index built with it, a cell, a
    copy of the checkpoint with flipped bytes in its weights, and a checkpoint whose weights
    verify but give NaN."""
    base = tmp_path_factory.mktemp("errors")
    data = make_folder_dataset(base / "data")
    torch.manual_seed(0)
    model = build_encoder(EncoderConfig(image_size=32, stem="standard")).eval()
    record = {"split": "paper", "seed": 0, "dataset": str(data.resolve()), "layout": "folders"}
    good = base / "good.pt"
    save_checkpoint(good, model, train=record)
    with torch.no_grad():
        model.norm.weight[:] = float("nan")
    nan = base / "nan.pt"
    save_checkpoint(nan, model, train=record)
    idx = base / "idx"
    result = runner.invoke(app, ["index", str(data), "--model", str(good), "--index", str(idx)])
    assert result.exit_code == 0, result.output
    return {
        "data": data,
        "good": good,
        "bad": corrupt_copy(good, base / "bad.pt"),
        "nan": nan,
        "idx": idx,
        "cell": make_cell(base / "cells"),
        "image": next((data / "1").glob("*.png")),
    }


def commands(s: dict[str, Path], model: Path, tmp: Path) -> dict[str, list[str]]:
    return {
        "query": ["query", str(s["image"]), "--index", str(s["idx"]), "--model", str(model)],
        "index": ["index", str(s["data"]), "--model", str(model), "--index", str(tmp / "new")],
        "bench": ["bench", "--data", str(s["data"]), "--model", str(model), "--device", "cpu"],
        "karyotype": ["karyotype", str(s["cell"]), "--model", str(model), "--device", "cpu"],
    }


@pytest.mark.parametrize("command", ["query", "index", "bench", "karyotype"])
def test_corrupt_weights_are_one_error_line(setup: dict, tmp_path: Path, command: str) -> None:
    line = one_error_line(runner.invoke(app, commands(setup, setup["bad"], tmp_path)[command]))
    assert line == (
        f"error: {setup['bad']}: the weights do not match their fingerprint: the file is corrupt"
    )
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("command", ["index", "bench", "karyotype"])
def test_nan_embeddings_are_never_reported_or_stored(
    setup: dict, tmp_path: Path, command: str
) -> None:
    line = one_error_line(runner.invoke(app, commands(setup, setup["nan"], tmp_path)[command]))
    assert "non-finite" in line
    assert not (tmp_path / "new" / "card.json").exists()


def missing_path_commands(s: dict[str, Path], gone: Path) -> dict[str, list[str]]:
    """Each command, with one path that does not exist and everything else as it should be."""
    good, data, cell, idx = str(s["good"]), str(s["data"]), str(s["cell"]), str(s["idx"])
    return {
        "data inspect": ["data", "inspect", str(gone)],
        "train --data": ["train", "--data", str(gone), "--out", str(gone.parent / "o.pt")],
        "train --init": ["train", "--data", data, "--out", "o.pt", "--init", str(gone)],
        "train --also": ["train", "--data", data, "--out", "o.pt", "--also", str(gone)],
        "bench --data": ["bench", "--data", str(gone), "--model", good],
        "bench --model": ["bench", "--data", data, "--model", str(gone)],
        "index PATH": ["index", str(gone), "--model", good, "--index", str(gone.parent / "i")],
        "index --model": ["index", data, "--model", str(gone), "--index", str(gone.parent / "i")],
        "query IMAGE": ["query", str(gone), "--index", idx],
        "query --model": ["query", str(s["image"]), "--index", idx, "--model", str(gone)],
        "query --index": ["query", str(s["image"]), "--index", str(gone)],
        "remove --index": ["remove", str(s["image"]), "--index", str(gone)],
        "karyotype CELL_DIR": ["karyotype", str(gone), "--model", good],
        "karyotype --model": ["karyotype", cell, "--model", str(gone)],
        "karyotype --params": ["karyotype", cell, "--model", good, "--params", str(gone)],
        "karyotype --index": ["karyotype", cell, "--model", good, "--index", str(gone)],
        "karyotype fit --data": ["karyotype", "fit", "--data", str(gone), "--model", good],
        "karyotype fit --model": ["karyotype", "fit", "--data", data, "--model", str(gone)],
    }


MISSING = [
    "data inspect",
    "train --data",
    "train --init",
    "bench --data",
    "bench --model",
    "index PATH",
    "index --model",
    "query IMAGE",
    "query --model",
    "query --index",
    "remove --index",
    "karyotype CELL_DIR",
    "karyotype --model",
    "karyotype --params",
    "karyotype --index",
    "karyotype fit --data",
    "karyotype fit --model",
]


@pytest.mark.parametrize("command", MISSING)
def test_a_missing_path_is_one_error_line_and_exit_1(
    setup: dict, tmp_path: Path, command: str
) -> None:
    gone = tmp_path / "made-up" / "gone"
    line = one_error_line(runner.invoke(app, missing_path_commands(setup, gone)[command]))
    assert str(gone) in line
    assert not (tmp_path / "made-up").exists()  # nothing created on the way (no .lock)


def test_usage_errors_exit_2_and_the_convention_is_in_the_help() -> None:
    assert runner.invoke(app, ["query", "--no-such-option"]).exit_code == 2
    assert runner.invoke(app, ["bench"]).exit_code == 2  # --data and --model missing
    assert runner.invoke(app, ["query", "x.png", "-k", "many"]).exit_code == 2
    helptext = " ".join(runner.invoke(app, ["--help"]).stdout.split())
    assert "Exit status: 0 done; 1 a user error" in helptext and "2 a usage error" in helptext


def test_output_folders_are_refused_before_any_work(setup: dict, tmp_path: Path) -> None:
    data, good = str(setup["data"]), str(setup["good"])
    bench = ["bench", "--data", data, "--model", good, "--json", str(tmp_path)]
    assert one_error_line(runner.invoke(app, bench)) == (
        f"error: {tmp_path}: a folder; give a file path to write to"
    )
    train = ["train", "--data", data, "--out", str(tmp_path), "--epochs", "1"]
    assert str(tmp_path) in one_error_line(runner.invoke(app, train))


def test_karyotype_png_prints_the_path_it_wrote(setup: dict, tmp_path: Path) -> None:
    command = ["karyotype", str(setup["cell"]), "--model", str(setup["good"]), "--device", "cpu"]
    result = runner.invoke(app, [*command, "--png", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out.png").is_file() and not (tmp_path / "out").exists()
    assert f"karyogram: {tmp_path / 'out.png'}" in result.stdout.replace("\n", "")


def test_karyotype_help_keeps_the_model_placeholder() -> None:
    text = " ".join(runner.invoke(app, ["karyotype", "cell", "--help"]).stdout.split())
    assert "<model>.karyotype.json" in text


@pytest.mark.parametrize("n", [1, 3, 19])
def test_a_handful_of_crops_is_not_a_cell(setup: dict, tmp_path: Path, n: int) -> None:
    import shutil

    crops = sorted(setup["cell"].rglob("*.png"))[:n]
    for c in crops:
        shutil.copy(c, tmp_path / c.name)
    command = ["karyotype", str(tmp_path), "--model", str(setup["good"]), "--device", "cpu"]
    line = one_error_line(runner.invoke(app, command))
    assert f"not a cell: {n} readable crop" in line
