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

from ..evaluation.test_bench import make_folder_dataset
from ..model.test_checkpoint import corrupt_copy
from .test_karyotype import make_cell

runner = CliRunner()


def one_error_line(result) -> str:  # noqa: ANN001
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


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
