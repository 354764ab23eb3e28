"""`karyosearch index`, `remove` and `query` through typer's CliRunner."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from karyosearch.cli import app

from ..conftest import one_error_line
from ..search.test_engine import make_data, tiny_checkpoint

runner = CliRunner()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A made-up dataset (one corrupt file), its checkpoint, and the index built by the CLI."""
    base = tmp_path_factory.mktemp("cliindex")
    data = make_data(base / "data", per_class=2)
    (data / "1" / "broken.png").write_bytes(b"not a png")
    ckpt = tiny_checkpoint(tmp_path_factory, "tiny-a", 0)
    result = runner.invoke(
        app,
        [
            "index",
            str(data),
            "--model",
            str(ckpt),
            "--index",
            str(base / "idx"),
            "--batch-size",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    return {"base": base, "data": data, "ckpt": ckpt, "idx": base / "idx", "summary": result}


def test_index_prints_a_summary_and_reports_rejected(built: dict) -> None:
    out = built["summary"].stdout
    for text in (
        "8 images (Flat)",
        "added 8",
        "updated 0",
        "unchanged 0",
        "removed 0",
        "rejected 1",
        "img/s",
        "archive call: the ",  # what the index chose, and why (no cells here: a fallback)
        "fallback (k 5",
        "fewer than 4 labelled cells",
    ):
        assert text in out
    assert "broken.png" in built["summary"].stderr


def test_index_again_embeds_nothing_json(built: dict) -> None:
    result = runner.invoke(
        app,
        [
            "index",
            str(built["data"]),
            "--model",
            str(built["ckpt"]),
            "--index",
            str(built["idx"]),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["added"], report["unchanged"], report["embedded"], report["count"]) == (
        0,
        8,
        0,
        8,
    )
    assert [r["path"] for r in report["rejected"]] == [
        str((built["data"] / "1" / "broken.png").resolve())
    ]
    assert report["archive"] is None  # chosen when built; nothing changed, nothing chosen


def test_a_flat_index_past_its_size_suggests_factory_auto(
    built: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from karyosearch.search import faiss_index

    args = [
        "index",
        str(built["data"]),
        "--model",
        str(built["ckpt"]),
        "--index",
        str(built["idx"]),
    ]
    quiet = runner.invoke(app, args)
    assert quiet.exit_code == 0 and "--factory auto" not in quiet.stderr  # 8 crops: Flat is right
    monkeypatch.setattr(faiss_index, "FLAT_MAX", 5)
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "8 images in an exact (Flat) index" in result.stderr
    assert f"--index {built['idx']} --factory auto" in result.stderr


def test_query_json_has_the_design_keys_and_self_first(built: dict) -> None:
    image = built["data"] / "X" / "img1.png"
    result = runner.invoke(
        app,
        [
            "query",
            str(image),
            str(built["data"] / "Y"),
            "--index",
            str(built["idx"]),
            "-k",
            "3",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    results = json.loads(result.stdout)["results"]
    assert [r["query"] for r in results] == [str(image)] + [
        str(built["data"] / "Y" / f"img{i}.png") for i in (0, 1)
    ]
    for r in results:
        assert set(r) >= {"query", "call", "predicted", "knn_label", "neighbours"}
        assert set(r["predicted"]) >= {"label", "score", "margin"}
        assert set(r["call"]) >= {"label", "score", "margin"} and 0 <= r["call"]["score"] <= 1
        assert len(r["neighbours"]) == 3
        first = r["neighbours"][0]
        assert set(first) >= {"rank", "id", "score", "label", "path", "cell_id"}
        assert first["rank"] == 1 and first["path"] == str(Path(r["query"]).resolve())
        assert first["score"] == pytest.approx(1.0, abs=1e-4)
        assert first["label"] == Path(r["query"]).parent.name


def test_query_prints_a_readable_table(built: dict) -> None:
    image = built["data"] / "2" / "img0.png"
    result = runner.invoke(app, ["query", str(image), "--index", str(built["idx"]), "-k", "2"])
    assert result.exit_code == 0, result.output
    for text in ("call", "predicted", "margin", "neighbours vote", "rank", "score", "img0.png"):
        assert text in result.stdout


def test_remove_then_nothing_left_to_remove(built: dict, tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    shutil.copytree(built["idx"], idx)
    result = runner.invoke(app, ["remove", str(built["data"] / "Y"), "--index", str(idx)])
    assert result.exit_code == 0, result.output
    assert "removed 2, 6 left" in result.stdout
    line = one_error_line(
        runner.invoke(app, ["remove", str(built["data"] / "Y"), "--index", str(idx)])
    )
    assert "none of the given paths" in line


def test_query_errors_are_one_line(built: dict, tmp_path: Path) -> None:
    idx = str(built["idx"])
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    line = one_error_line(runner.invoke(app, ["query", str(notes), "--index", idx]))
    assert "notes.txt" in line and "not an image" in line
    line = one_error_line(runner.invoke(app, ["query", str(tmp_path / "gone.png"), "--index", idx]))
    assert "gone.png: no such file" in line
    image = str(built["data"] / "1" / "img0.png")
    line = one_error_line(runner.invoke(app, ["query", image, "--index", str(tmp_path / "none")]))
    assert "no index here" in line
    (tmp_path / "empty").mkdir()
    line = one_error_line(runner.invoke(app, ["query", str(tmp_path / "empty"), "--index", idx]))
    assert "no image files" in line


def test_another_model_is_refused_in_one_line(
    built: dict, tmp_path_factory: pytest.TempPathFactory
) -> None:
    other = tiny_checkpoint(tmp_path_factory, "tiny-b", 1)
    image = str(built["data"] / "1" / "img0.png")
    line = one_error_line(
        runner.invoke(app, ["query", image, "--index", str(built["idx"]), "--model", str(other)])
    )
    assert "was built with model" in line
    line = one_error_line(
        runner.invoke(
            app, ["index", str(built["data"]), "--model", str(other), "--index", str(built["idx"])]
        )
    )
    assert "was built with model" in line


def test_index_input_errors_are_one_line(built: dict, tmp_path: Path) -> None:
    data, ckpt = str(built["data"]), str(built["ckpt"])
    line = one_error_line(
        runner.invoke(
            app,
            [
                "index",
                data,
                "--model",
                ckpt,
                "--index",
                str(tmp_path / "i"),
                "--factory",
                "Nonsense",
            ],
        )
    )
    assert "factory" in line
    line = one_error_line(
        runner.invoke(
            app,
            [
                "index",
                data,
                "--model",
                ckpt,
                "--index",
                str(tmp_path / "i"),
                "--factory",
                "IVF256,Flat",
            ],
        )
    )
    assert "256 IVF lists" in line
    line = one_error_line(
        runner.invoke(
            app,
            ["index", str(tmp_path / "nodata"), "--model", ckpt, "--index", str(tmp_path / "i")],
        )
    )
    assert "nodata" in line
    line = one_error_line(
        runner.invoke(
            app, ["index", data, "--model", str(tmp_path / "no.pt"), "--index", str(tmp_path / "i")]
        )
    )
    assert "no.pt" in line
    assert not (tmp_path / "i").exists()


def test_query_walks_a_class_tree_as_index_does(built: dict, tmp_path: Path) -> None:
    """`query FOLDER` on a `<class>/<image>` tree: every image under it, recursively."""
    import shutil

    from karyosearch.data.files import image_files

    tree = shutil.copytree(built["data"], tmp_path / "tree")
    (tree / "1" / "broken.png").unlink()
    result = runner.invoke(
        app, ["query", str(tree), "--index", str(built["idx"]), "-k", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    queries = [r["query"] for r in json.loads(result.stdout)["results"]]
    assert queries == [str(p) for p in image_files(tree)] and len(queries) == 8


def test_index_without_a_model_uses_the_shipped_one_for_the_stain_and_says_so(
    built: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from karyosearch.model.shipped import SHIPPED

    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(built["ckpt"], models / SHIPPED["Q-band"])  # made-up crops are bright on dark
    monkeypatch.setenv("KARYOSEARCH_MODELS", str(models))
    idx = tmp_path / "idx"
    result = runner.invoke(app, ["index", str(built["data"]), "--index", str(idx)])
    assert result.exit_code == 0, result.output
    assert "look Q-band; using the shipped Q-band encoder" in result.stderr
    # an update without --model extends the index with its own model, and says so
    again = runner.invoke(app, ["index", str(built["data"]), "--index", str(idx)])
    assert again.exit_code == 0, again.output
    assert "extending the index with its own model" in again.stderr
    assert "unchanged 8" in again.stdout
