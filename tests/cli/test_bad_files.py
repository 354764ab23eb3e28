"""Entries that are no readable regular file (a FIFO, a socket, a symlink loop, a broken
symlink, a folder named like an image) in a dataset, a CSV manifest, a cell folder or a
query: each is skipped and listed with its reason, nothing blocks, nothing raises."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from karyosearch.cli import app

from ..conftest import make_special_entries, one_error_line, without_hanging
from .test_errors import setup  # noqa: F401 - the module's fixture

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]


def reasons_of(entries: list[dict], key: str = "path") -> dict[str, str]:
    return {Path(e[key]).name: e["reason"] for e in entries}


def assert_listed(made: dict[str, str], reasons: dict[str, str]) -> None:
    for name, words in made.items():
        assert name in reasons, (name, reasons)
        if name == "folder.png":
            words = "folder"
        assert words in reasons[name], (name, reasons[name])


def test_index_of_a_csv_manifest_with_a_fifo_does_not_hang(setup: dict, tmp_path: Path) -> None:  # noqa: F811
    """The reported hang: `index manifest.csv` blocked forever hashing a FIFO listed in it."""
    data = tmp_path / "data"
    shutil.copytree(setup["data"] / "1", data / "imgs")
    made = make_special_entries(data / "odd")
    rows = ["path,label"] + [f"imgs/{p.name},1" for p in sorted((data / "imgs").iterdir())]
    rows += [f"odd/{name},2" for name in made]
    (data / "manifest.csv").write_text("\n".join(rows) + "\n")
    command = [sys.executable, "-m", "karyosearch.cli", "index", str(data / "manifest.csv")]
    command += ["--model", str(setup["good"]), "--index", str(tmp_path / "idx"), "--json"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    finally:
        from ..conftest import unblock_fifo

        unblock_fifo(data / "odd" / "pipe.png")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    report = json.loads(done.stdout)
    assert report["added"] == len(list((data / "imgs").iterdir()))
    assert_listed(made, reasons_of(report["rejected"]))


def test_data_inspect_lists_each_special_entry(setup: dict, tmp_path: Path) -> None:  # noqa: F811
    data = tmp_path / "data"
    shutil.copytree(setup["data"], data)
    made = make_special_entries(data / "1")
    result = runner.invoke(app, ["data", "inspect", str(data), "--json"])
    assert result.exit_code == 0, result.output
    assert_listed(made, reasons_of(json.loads(result.stdout)["rejected"]))


def test_karyotype_lists_each_special_entry_of_the_cell(setup: dict, tmp_path: Path) -> None:  # noqa: F811
    cell = tmp_path / "cell"
    shutil.copytree(setup["cell"], cell)
    made = make_special_entries(cell / "clase1")
    command = ["karyotype", str(cell), "--model", str(setup["good"]), "--json", "--device", "cpu"]
    result = without_hanging(lambda: runner.invoke(app, command), [cell / "clase1" / "pipe.png"])
    assert result.exit_code == 0, result.output
    assert_listed(made, reasons_of(json.loads(result.stdout)["skipped"]))
    text = runner.invoke(app, command[:-3] + ["--device", "cpu"])
    assert text.exit_code == 0, text.output
    flat = text.stdout.replace("\n", "")  # rich wraps long paths
    assert all(f"clase1/{name}" in flat for name in made) and "pipe.png: a named pipe" in flat


def test_bench_lists_each_special_entry(setup: dict, tmp_path: Path) -> None:  # noqa: F811
    data = tmp_path / "data"
    shutil.copytree(setup["data"], data)
    made = make_special_entries(data / "1")
    command = ["bench", "--data", str(data), "--model", str(setup["good"]), "--json", "-"]
    result = runner.invoke(app, [*command, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert_listed(made, reasons_of(json.loads(out[out.index("{\n") :])["rejected"]))
    assert "pipe.png: a named pipe" in result.stderr


def test_query_on_a_folder_reports_bad_files_and_answers_the_rest(
    setup: dict,  # noqa: F811
    tmp_path: Path,
) -> None:
    folder = tmp_path / "queries"
    shutil.copytree(setup["data"] / "2", folder)
    good = sorted(p.name for p in folder.iterdir())
    (folder / "broken.png").write_bytes(b"not a png")
    made = make_special_entries(folder / "odd")
    command = ["query", str(folder), "--index", str(setup["idx"]), "-k", "2"]
    result = runner.invoke(app, [*command, "--json"])
    assert result.exit_code == 1, result.output
    run = json.loads(result.stdout)
    assert sorted(Path(r["query"]).name for r in run["results"]) == good
    errors = reasons_of(run["errors"])
    assert "not an image" in errors.pop("broken.png")
    assert_listed(made, errors)
    text = runner.invoke(app, command)
    assert text.exit_code == 1 and "Traceback" not in text.output
    assert all(name in text.stdout for name in good)
    lines = text.stderr.strip().splitlines()
    assert len(lines) == 1 + len(made) and all(line.startswith("error: ") for line in lines)


def test_query_of_missing_files_only_is_one_error_line(setup: dict, tmp_path: Path) -> None:  # noqa: F811
    line = one_error_line(
        runner.invoke(app, ["query", str(tmp_path / "nope.png"), "--index", str(setup["idx"])])
    )
    assert line == f"error: {tmp_path / 'nope.png'}: no such file or folder"


def test_remove_of_a_symlink_loop_is_an_error_line_not_a_traceback(
    setup: dict,  # noqa: F811
    tmp_path: Path,
) -> None:
    idx = tmp_path / "idx"
    shutil.copytree(setup["idx"], idx)
    os.symlink("loop.png", tmp_path / "loop.png")
    line = one_error_line(
        runner.invoke(app, ["remove", str(tmp_path / "loop.png"), "--index", str(idx)])
    )
    assert "symlink loop" in line
    victim = str(next((setup["data"] / "1").glob("*.png")))
    both = runner.invoke(app, ["remove", str(tmp_path / "loop.png"), victim, "--index", str(idx)])
    assert both.exit_code == 1 and "Traceback" not in both.output
    assert "removed 1" in both.stdout and "symlink loop" in both.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_listed(tmp_path: Path) -> None:
    from karyosearch.data.files import walk

    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "a.png").chmod(0)
    assert walk(tmp_path).skipped == [(tmp_path / "a.png", "permission denied")]
