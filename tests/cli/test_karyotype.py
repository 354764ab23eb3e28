"""`karyosearch karyotype` through typer's CliRunner with a tiny random encoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from karyosearch.cli import app
from karyosearch.labels import CLASS_NAMES
from karyosearch.model.checkpoint import save_checkpoint
from karyosearch.model.encoder import EncoderConfig, build_encoder

from ..conftest import chromosome_array, make_folders_layout, one_error_line, write_image

runner = CliRunner()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("karyo") / "m.pt"
    save_checkpoint(path, build_encoder(EncoderConfig(image_size=32, stem="standard")))
    return path


def make_cell(folder: Path, name: str = "p1.1.tiff") -> Path:
    """One made-up cell in the G-band layout: clase<k>/clase<k>_<i>_<name>.png, 46 crops."""
    cell = folder / name
    for k in range(1, 25):
        for i in range(2 if k <= 22 else 1):
            array = chromosome_array(70 - 2 * k, 16 + i, bright=False, seed=10 * k + i)
            write_image(cell / f"clase{k}" / f"clase{k}_{i}_{name}.png", array)
    return cell


def test_empty_folder_is_one_line(tmp_path: Path, ckpt: Path) -> None:
    (tmp_path / "cell").mkdir()
    line = one_error_line(
        runner.invoke(app, ["karyotype", str(tmp_path / "cell"), "--model", str(ckpt)])
    )
    assert "empty" in line


def test_non_images_only_is_one_line(tmp_path: Path, ckpt: Path) -> None:
    (tmp_path / "cell").mkdir()
    (tmp_path / "cell" / "notes.txt").write_text("not a chromosome")
    (tmp_path / "cell" / "table.csv").write_text("a,b\n")
    line = one_error_line(
        runner.invoke(app, ["karyotype", str(tmp_path / "cell"), "--model", str(ckpt)])
    )
    assert "no chromosome images" in line


def test_hundreds_of_images_are_not_one_cell(tmp_path: Path, ckpt: Path) -> None:
    for i in range(300):
        write_image(tmp_path / "many" / f"img{i:03d}.png", chromosome_array(20, 10, seed=i))
    line = one_error_line(
        runner.invoke(app, ["karyotype", str(tmp_path / "many"), "--model", str(ckpt)])
    )
    assert "300 images" in line and "--batch" in line


def test_missing_folder_and_bad_model_are_one_line(tmp_path: Path, ckpt: Path) -> None:
    one_error_line(runner.invoke(app, ["karyotype", str(tmp_path / "nope"), "--model", str(ckpt)]))
    cell = make_cell(tmp_path)
    line = one_error_line(
        runner.invoke(app, ["karyotype", str(cell), "--model", str(tmp_path / "no.pt")])
    )
    assert "no.pt" in line


def test_json_and_png_of_one_cell(tmp_path: Path, ckpt: Path) -> None:
    cell = make_cell(tmp_path)
    (cell / "README.txt").write_text("notes")
    png = tmp_path / "out" / "karyogram.png"
    result = runner.invoke(
        app,
        [
            "karyotype",
            str(cell),
            "--model",
            str(ckpt),
            "--json",
            "--png",
            str(png),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert {"karyotype", "counts", "crops", "review"} <= set(out)
    assert out["karyotype"].split(",")[0] in {"45", "46", "47", "48"}
    assert set(out["counts"]) == set(CLASS_NAMES)
    assert len(out["crops"]) == 46
    for crop in out["crops"]:
        assert {"path", "label", "confidence", "changed"} <= set(crop)
        assert crop["label"] in CLASS_NAMES
    assert set(out["review"]) <= {c["path"] for c in out["crops"]}
    assert [s["path"] for s in out["skipped"]] == [str(cell / "README.txt")]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out["png"] == str(png)


def test_batch_summary_and_pngs(tmp_path: Path, ckpt: Path) -> None:
    cells = tmp_path / "cells"
    make_cell(cells, "p1.1.tiff")
    make_cell(cells, "p2.1.tiff")
    pngs = tmp_path / "pngs"
    result = runner.invoke(
        app, ["karyotype", str(cells), "--batch", "--model", str(ckpt), "--png", str(pngs)]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.count("counts ") == 2 and "review" in result.stdout
    assert "2 cells:" in result.stdout
    assert sorted(p.name for p in pngs.iterdir()) == [
        "p1.1.tiff.karyogram.png",
        "p2.1.tiff.karyogram.png",
    ]


def test_index_gives_review_crops_neighbours(tmp_path: Path, ckpt: Path) -> None:
    from karyosearch.search.update import build_or_update

    build_or_update(
        tmp_path / "idx", make_folders_layout(tmp_path / "archive", 1, junk=False), ckpt
    )
    cell = make_cell(tmp_path)
    result = runner.invoke(
        app,
        [
            "karyotype",
            str(cell),
            "--model",
            str(ckpt),
            "--json",
            "--index",
            str(tmp_path / "idx"),
            "-k",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    reviewed = [c for c in out["crops"] if c["review"]]
    assert reviewed, "a random encoder leaves crops to review"
    for crop in reviewed:
        assert 1 <= len(crop["neighbours"]) <= 3
        assert {"rank", "score", "label", "path"} <= set(crop["neighbours"][0])


def test_help_of_the_cell_command_and_of_fit(tmp_path: Path) -> None:
    result = runner.invoke(app, ["karyotype", "--help"])
    assert result.exit_code == 0 and "CELL_DIR" in result.output and "fit" in result.output
    result = runner.invoke(app, ["karyotype", "fit", "--help"])
    assert result.exit_code == 0 and "--data" in result.output and "--model" in result.output
    result = runner.invoke(app, ["karyotype", "cell", "--help"])
    assert result.exit_code == 0 and "--batch" in result.output


def test_fit_writes_params_that_karyotype_applies_and_another_model_refuses(
    tmp_path: Path, ckpt: Path
) -> None:
    data = tmp_path / "gband" / "single_clase"
    for p in (1, 2, 3):
        make_cell(data, f"p{p}.1.tiff")
    model = tmp_path / "a.pt"
    model.write_bytes(ckpt.read_bytes())
    result = runner.invoke(
        app, ["karyotype", "fit", "--data", str(tmp_path / "gband"), "--model", str(model)]
    )
    assert result.exit_code == 0, result.output
    written = tmp_path / "a.karyotype.json"
    fitted = json.loads(written.read_text())
    assert fitted["format"] == "karyosearch-karyotype-params/1" and fitted["temperature"] > 0
    assert fitted["fitted"]["model_fingerprint"] and fitted["fitted"]["split"] == "karyo"
    assert str(written) in result.stdout

    result = runner.invoke(
        app, ["karyotype", str(data / "p1.1.tiff"), "--model", str(model), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["temperature"] == pytest.approx(fitted["temperature"])

    # the same file beside another encoder is stale: one line naming the command that refits
    import torch

    from karyosearch.model.checkpoint import save_checkpoint
    from karyosearch.model.encoder import EncoderConfig, build_encoder

    torch.manual_seed(5)
    other = tmp_path / "b.pt"
    save_checkpoint(other, build_encoder(EncoderConfig(image_size=32, stem="standard")))
    (tmp_path / "b.karyotype.json").write_text(written.read_text())
    line = one_error_line(
        runner.invoke(app, ["karyotype", str(data / "p1.1.tiff"), "--model", str(other)])
    )
    assert "karyosearch karyotype fit" in line and str(other) in line
