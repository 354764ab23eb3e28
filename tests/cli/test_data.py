"""`karyosearch data inspect`: JSON contract, human output, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from karyosearch.cli import app
from karyosearch.labels import CLASS_NAMES

from ..conftest import chromosome_array, make_folders_layout, write_image

runner = CliRunner()


@pytest.fixture
def folders(tmp_path: Path) -> Path:
    root = make_folders_layout(tmp_path / "crops", per_class=2)
    (root / "23" / "broken.png").write_bytes(b"")  # 23 is X  # an image file that cannot be read
    return root


def inspect(*args: str):
    return runner.invoke(app, ["data", "inspect", *args])


def test_inspect_json(folders: Path) -> None:
    result = inspect(str(folders), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {"layout", "images", "cells", "patients", "classes", "rejected"} <= set(report)
    assert report["layout"] == "folders"
    assert report["images"] == 48
    assert report["cells"] == 0 and report["patients"] == 0
    assert list(report["classes"]) == list(CLASS_NAMES)
    assert report["classes"] == {name: 2 for name in CLASS_NAMES}
    rejected = {
        Path(r["path"]).relative_to(folders).as_posix(): r["reason"] for r in report["rejected"]
    }
    assert set(rejected) == {"junk/img0.png", "23/broken.png"}
    assert "junk" in rejected["junk/img0.png"]
    assert rejected["23/broken.png"] == "empty file"


def test_inspect_json_with_cells(tmp_path: Path) -> None:
    """A CSV manifest with cells and patients, chosen with --layout."""
    rows = ["path,label,cell_id,patient_id"]
    for i in range(6):
        write_image(tmp_path / f"c{i}.png", 255 - chromosome_array(seed=i))  # dark on light
        rows.append(f"c{i}.png,{i + 20},cell{i % 3},p{i % 2}")
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    result = inspect(str(tmp_path / "list.csv"), "--layout", "csv", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["layout"] == "csv"
    assert report["images"] == 5  # labels 20..24 are classes; 25 is not
    assert (report["cells"], report["patients"]) == (3, 2)
    assert [report["classes"][k] for k in ("20", "21", "22", "X", "Y")] == [1] * 5
    assert len(report["rejected"]) == 1 and "25" in report["rejected"][0]["reason"]
    assert report["polarity"] == {"bright": 0, "dark": 5}


def test_inspect_audits_labels_against_sizes(tmp_path: Path) -> None:
    """Four 46,XX cells whose class k is 150 - 5k px long; in one, the 1s and 21s have
    swapped labels: those four crops, and nothing else, are listed."""
    rows = ["path,label,cell_id,patient_id"]
    for cell in range(4):
        for k in range(23):  # 1..22 and X
            for i in range(2):
                label = k + 1
                if cell == 3 and label in (1, 21):
                    label = 22 - label  # 1 <-> 21
                name = f"c{cell}_{k}_{i}.png"
                write_image(tmp_path / name, chromosome_array(h=150 - 5 * k, seed=k))
                rows.append(f"{name},{label},cell{cell},p{cell}")
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    result = inspect(str(tmp_path / "list.csv"), "--layout", "csv", "--json")
    assert result.exit_code == 0, result.output
    audit = json.loads(result.stdout)["label_audit"]
    assert [a["cell"] for a in audit] == ["cell3"]
    flagged = {Path(c["path"]).name: c["label"] for c in audit[0]["crops"]}
    assert flagged == {
        "c3_0_0.png": "21",
        "c3_0_1.png": "21",
        "c3_20_0.png": "1",
        "c3_20_1.png": "1",
    }
    human = inspect(str(tmp_path / "list.csv"), "--layout", "csv")
    assert "1 cell(s) whose labels their crop sizes contradict" in human.output
    assert "c3_0_0.png (21," in human.output


def test_inspect_human(folders: Path) -> None:
    result = inspect(str(folders))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "layout: folders" in out
    assert "48 images, 0 cells, 0 patients" in out
    for name in ("1", "22", "X", "Y"):
        assert f"│ {name} " in out
    assert "2 rejected" in out
    flat = " ".join(out.split())  # rich wraps long lines at the terminal width
    assert "broken.png: empty file" in flat
    with pytest.raises(json.JSONDecodeError):
        json.loads(out)


def test_inspect_missing_path(tmp_path: Path) -> None:
    result = inspect(str(tmp_path / "absent"), "--json")
    assert result.exit_code == 1  # a user error, as a missing path is for every command
    assert result.stdout == ""
    assert result.stderr == f"error: {tmp_path / 'absent'}: no such file or folder\n"


@pytest.mark.parametrize("content", ["empty", "junk_only"])
def test_inspect_no_dataset(content: str, tmp_path: Path) -> None:
    root = tmp_path / "nothing"
    root.mkdir()
    if content == "junk_only":
        (root / "junk").mkdir()
        (root / "junk" / "a.txt").write_text("x")
    result = inspect(str(root), "--json")
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and str(root) in lines[0]
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


def test_inspect_bad_layout_name(folders: Path) -> None:
    result = inspect(str(folders), "--layout", "zip")
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("error:") and "unknown layout" in result.stderr


def test_inspect_help() -> None:
    result = runner.invoke(app, ["data", "inspect", "--help"])
    assert result.exit_code == 0
    assert "--json" in result.stdout and "--layout" in result.stdout


def test_inspect_bioimlab_json(bioimlab: Path) -> None:
    """Decodes the 5,474 real BMPs (a few seconds)."""
    result = inspect(str(bioimlab), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["layout"] == "bioimlab"
    assert report["images"] == 5474
    assert report["cells"] == 119 and report["patients"] == 119
    assert list(report["classes"]) == list(CLASS_NAMES)
    assert report["classes"]["1"] == 238 and report["classes"]["X"] == 193
    assert report["classes"]["Y"] == 45
    assert report["rejected"] == []
    assert report["polarity"] == {"bright": 5474, "dark": 0}
