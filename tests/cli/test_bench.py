"""`karyosearch bench` through typer's CliRunner on a tiny made-up dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from karyosearch.cli import app
from karyosearch.model.checkpoint import save_checkpoint
from karyosearch.model.encoder import EncoderConfig, build_encoder

from ..evaluation.test_bench import DESIGN_KEYS, make_folder_dataset

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("clibench")
    data = make_folder_dataset(base / "data")
    model = build_encoder(EncoderConfig(arch="proxy-resnext", image_size=32, stem="standard"))
    ckpt = base / "m.pt"
    save_checkpoint(
        ckpt,
        model,
        train={
            "split": "paper",
            "seed": 0,
            "dataset": str(data.resolve()),
            "layout": "folders",
            "preset": "default",
        },
    )
    return data, ckpt


def test_bench_prints_table_and_writes_json_and_figures(
    tiny: tuple[Path, Path], tmp_path: Path
) -> None:
    data, ckpt = tiny
    out, figs = tmp_path / "res" / "run.json", tmp_path / "figs"
    result = runner.invoke(
        app,
        [
            "bench",
            "--data",
            str(data),
            "--model",
            str(ckpt),
            "--json",
            str(out),
            "--figures",
            str(figs),
            "--batch-size",
            "8",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    for text in ("accuracy", "F1 (macro)", "Recall@1", "Recall@8", "per-class accuracy"):
        assert text in result.output
    r = json.loads(out.read_text())
    assert DESIGN_KEYS <= set(r)
    assert (r["split"], r["seed"], r["arch"]) == ("paper", 0, "proxy-resnext")
    assert all(0.0 <= r[k] <= 1.0 for k in ("accuracy", "precision", "recall", "f1"))
    assert all(0.0 <= v <= 1.0 for v in r["recall_at_k"].values())
    assert sorted(p.name for p in figs.iterdir()) == [
        "confusion.png",
        "recall_at_k.png",
        "tsne.png",
    ]


def test_bench_json_to_stdout(tiny: tuple[Path, Path]) -> None:
    data, ckpt = tiny
    result = runner.invoke(app, ["bench", "--data", str(data), "--model", str(ckpt), "--json", "-"])
    assert result.exit_code == 0, result.output
    start = result.stdout.index("{\n")  # the table goes to stderr, the JSON to stdout
    assert json.loads(result.stdout[start:])["n_test"] > 0


def test_bench_refuses_another_seed_in_one_line(tiny: tuple[Path, Path]) -> None:
    data, ckpt = tiny
    result = runner.invoke(app, ["bench", "--data", str(data), "--model", str(ckpt), "--seed", "3"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "seed" in lines[0]


def test_bench_rejects_a_missing_model(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    data, _ = tiny
    result = runner.invoke(app, ["bench", "--data", str(data), "--model", str(tmp_path / "no.pt")])
    assert result.exit_code != 0


def test_bench_rejects_a_file_that_is_no_checkpoint(
    tiny: tuple[Path, Path], tmp_path: Path
) -> None:
    data, _ = tiny
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    result = runner.invoke(app, ["bench", "--data", str(data), "--model", str(bad)])
    assert result.exit_code == 1
    assert "not a karyosearch checkpoint" in result.stderr
