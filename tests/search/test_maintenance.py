"""Updates as segments through the engine and the CLI: the lost-update check, disk full as
one line, `index --merge` and `index --rebuild` mending an index with non-finite vectors."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import faiss
import numpy as np
import pytest
from typer.testing import CliRunner

import karyosearch.search.segments as segments_mod
from karyosearch.cli import app
from karyosearch.model.checkpoint import load_encoder
from karyosearch.model.encoder import Encoder
from karyosearch.search.engine import SearchIndex
from karyosearch.search.folder import (
    CARD_FILE,
    NonFiniteIndexError,
    WriteConflictError,
    read_index_folder,
)
from karyosearch.search.maintenance import merge, rebuild_index
from karyosearch.search.store import read_store, write_store
from karyosearch.search.update import apply_update, build_or_update, plan_update, remove

from ..conftest import chromosome_array, one_error_line, write_image
from .test_engine import make_data, tiny_checkpoint

runner = CliRunner()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory, "tiny-a", 0)


@pytest.fixture(scope="module")
def enc(ckpt: Path) -> Encoder:
    return load_encoder(ckpt)


def test_an_update_adds_a_segment_and_removal_keeps_the_old_files(
    tmp_path: Path, enc: Encoder
) -> None:
    data = make_data(tmp_path / "data")
    build_or_update(tmp_path / "idx", data, enc)
    first = read_index_folder(tmp_path / "idx").card.segments[0]
    write_image(data / "7" / "new.png", chromosome_array(70, 20, seed=77))
    report = build_or_update(tmp_path / "idx", data, enc)
    assert (report.added, report.count) == (1, 13)
    card = read_index_folder(tmp_path / "idx").card
    assert card.segments[0] == first and [s["count"] for s in card.segments] == [12, 1]
    remove(tmp_path / "idx", [data / "7" / "new.png", data / "1"])
    folder = read_index_folder(tmp_path / "idx")
    assert len(folder) == 9 and folder.card.segments[0]["faiss"] == first["faiss"]
    # the one-row segment, its row deleted, was merged away (nothing left of it)
    assert [s["n_deleted"] for s in folder.card.segments] == [3]


def test_two_racing_updates_the_second_is_refused_not_lost(tmp_path: Path, enc: Encoder) -> None:
    """Both plan from one generation; the first re-embeds a changed file, so the count stays
    the same within the same second (the old check, on the card's `updated` second and the
    count, let the second write silently drop the first's new vector)."""
    data = make_data(tmp_path / "data")
    build_or_update(tmp_path / "idx", data, enc)
    one = write_image(data / "1" / "img0.png", chromosome_array(90, 18, seed=123))
    plan_a = plan_update(tmp_path / "idx", data, enc)
    assert len(plan_a.changed_ids) == 1
    two = write_image(tmp_path / "more" / "6" / "b.png", chromosome_array(52, 15, seed=6))
    plan_b = plan_update(tmp_path / "idx", tmp_path / "more", enc)
    assert plan_a.stamp == plan_b.stamp
    stamp = plan_a.stamp
    a = apply_update(plan_a)
    assert (a.updated, a.count) == (1, 12)
    sha1_a = read_index_folder(tmp_path / "idx").rows.sha1
    with pytest.raises(
        WriteConflictError, match=rf"generation {stamp} -> {stamp + 1}\); run again"
    ):
        apply_update(plan_b)
    rows = read_index_folder(tmp_path / "idx").rows
    assert rows.sha1 == sha1_a and str(two.resolve()) not in rows.paths  # a's change is kept
    assert str(one.resolve()) in rows.paths
    assert build_or_update(tmp_path / "idx", tmp_path / "more", enc).added == 1  # run again


def test_disk_full_while_indexing_is_one_line_and_the_index_answers_as_before(
    tmp_path: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_data(tmp_path / "data")
    idx = tmp_path / "idx"
    built = runner.invoke(app, ["index", str(data), "--model", str(ckpt), "--index", str(idx)])
    assert built.exit_code == 0, built.output
    query = str(data / "2" / "img1.png")
    before = runner.invoke(app, ["query", query, "--index", str(idx), "--json"]).stdout
    write_image(data / "5" / "new.png", chromosome_array(50, 16, seed=5))
    real = segments_mod.write_store

    def full(path, rows, attrs=None):  # noqa: ANN001
        real(path, rows, attrs)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def save_full(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    for command in (
        ["index", str(data), "--model", str(ckpt), "--index", str(idx)],
        ["remove", str(data / "1"), "--index", str(idx)],  # tombstones: no store written
        ["index", "--merge", "--index", str(idx)],
    ):
        with monkeypatch.context() as m:
            m.setattr(segments_mod, "write_store", full)
            m.setattr(segments_mod.np, "save", save_full)
            result = runner.invoke(app, command)
        if command[1] == "--merge":  # one segment, nothing deleted: nothing to write
            assert result.exit_code == 0, result.output
            continue
        line = one_error_line(result)
        assert "no space left on device writing" in line and "previous index is intact" in line
        after = runner.invoke(app, ["query", query, "--index", str(idx), "--json"]).stdout
        assert after == before


def test_merge_through_the_cli_keeps_the_neighbours(tmp_path: Path, ckpt: Path) -> None:
    data = make_data(tmp_path / "data")
    idx = tmp_path / "idx"
    build_or_update(idx, data, ckpt)
    for i in range(3):
        write_image(data / "9" / f"n{i}.png", chromosome_array(55 + i, 16, seed=40 + i))
        build_or_update(idx, data, ckpt)
    remove(idx, [data / "X"])
    queries = sorted(str(p) for p in data.rglob("*.png"))
    before = [r.to_dict() for r in SearchIndex.open(idx).query_images(queries, k=5)]
    result = runner.invoke(app, ["index", "--merge", "--index", str(idx), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["segments_before"], report["segments_after"], report["dropped"]) == (4, 1, 3)
    after = [r.to_dict() for r in SearchIndex.open(idx).query_images(queries, k=5)]
    for b, a in zip(before, after, strict=True):
        assert [n["id"] for n in b["neighbours"]] == [n["id"] for n in a["neighbours"]]
    assert merge(idx).segments_after == 1  # a second merge has nothing to do


def _poison(idx: Path, n_bad: int) -> None:
    """Write NaN into the first rows of the index's only segment, as a broken model did
    before encoders refused non-finite output (and mark the segment unchecked)."""
    card = json.loads((idx / CARD_FILE).read_text())
    seg = card["segments"][0]
    rows, attrs = read_store(idx / seg["store"])
    rows.embeddings[:n_bad] = np.nan
    (idx / seg["store"]).unlink()
    write_store(idx / seg["store"], rows, {"model_fingerprint": attrs["model_fingerprint"]})
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(rows.dimension))
    index.add_with_ids(rows.embeddings, rows.ids)
    (idx / seg["faiss"]).unlink()
    faiss.write_index(index, str(idx / seg["faiss"]))
    seg["finite"] = False
    (idx / CARD_FILE).write_text(json.dumps(card))


def test_an_index_with_non_finite_rows_says_so_and_rebuild_mends_it(
    tmp_path: Path, ckpt: Path
) -> None:
    data = make_data(tmp_path / "data")
    idx = tmp_path / "idx"
    build_or_update(idx, data, ckpt)
    good = read_index_folder(idx, embeddings=True).rows
    _poison(idx, 3)
    query = str(data / "2" / "img1.png")
    line = one_error_line(runner.invoke(app, ["query", query, "--index", str(idx)]))
    assert "holds 3 non-finite vectors" in line and "index --rebuild" in line
    with pytest.raises(NonFiniteIndexError):
        build_or_update(idx, data, ckpt)  # an update does not paper over it

    result = runner.invoke(app, ["index", "--rebuild", "--index", str(idx), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["count"] == 12
    mended = read_index_folder(idx, embeddings=True).rows
    np.testing.assert_array_equal(mended.ids, good.ids)
    np.testing.assert_allclose(mended.embeddings, good.embeddings, atol=1e-5)
    r = SearchIndex.open(idx).query_images([query], k=1)[0]
    assert r.neighbours[0].path == str(Path(query).resolve())


def test_rebuild_drops_files_that_no_longer_read(tmp_path: Path, enc: Encoder) -> None:
    data = make_data(tmp_path / "data")
    build_or_update(tmp_path / "idx", data, enc)
    shutil.rmtree(data / "Y")
    report = rebuild_index(tmp_path / "idx", enc)
    assert (report.count, report.removed, len(report.rejected)) == (9, 3, 3)
    assert len(read_index_folder(tmp_path / "idx")) == 9


def test_index_options_are_checked(tmp_path: Path) -> None:
    line = one_error_line(runner.invoke(app, ["index", "--index", str(tmp_path / "i")]))
    assert "give a dataset PATH" in line
    line = one_error_line(runner.invoke(app, ["index", "--merge", "--rebuild"]))
    assert "not both" in line
