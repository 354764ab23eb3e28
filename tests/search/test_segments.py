"""Segments and the manifest: appends that leave old files alone, tombstones, merges with
the same answers, old single-file folders, readers during writes, the generation check,
and a fault injected at every file write, fsync and rename of a write."""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from pathlib import Path

import faiss
import numpy as np
import pytest

import karyosearch.search.segments as folder_mod
from karyosearch.search.faiss_index import build_faiss
from karyosearch.search.folder import (
    CARD_FILE,
    FAISS_FILE,
    LEGACY_FORMAT,
    STORE_FILE,
    IndexWriteError,
    NonFiniteIndexError,
    WriteConflictError,
    read_index_folder,
    writer_lock,
)
from karyosearch.search.segments import (
    merge_candidates,
    merge_segments,
    new_segment_index,
    write_generation,
)
from karyosearch.search.store import Rows, write_store

from .test_folder import card, make_rows, unit_vectors, write


def append(path: Path, rows: Rows, delete: np.ndarray | None = None) -> None:
    """One write: `rows` as a new segment, `delete` ids tombstoned (as update.py does)."""
    with writer_lock(path):
        folder = read_index_folder(path)
        tombstones = {}
        for seg in folder.segments:
            if delete is not None:
                mine = delete[seg.rows.positions(delete) >= 0]
                if len(mine):
                    tombstones[seg.name] = mine
        add = [(new_segment_index(folder.card.factory, rows, folder.template()), rows)]
        write_generation(path, folder.card, add if len(rows) else [], tombstones)


def answers(path: Path, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    return read_index_folder(path).search(queries, k)


def brute_force(rows: Rows, queries: np.ndarray, k: int) -> np.ndarray:
    sims = queries @ rows.embeddings.T
    return rows.ids[np.argsort(-sims, axis=1, kind="stable")[:, :k]]


def snapshot(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in path.iterdir()}


def test_an_append_writes_only_the_new_rows_and_leaves_old_files_alone(tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    write(idx, make_rows(300))
    before = snapshot(idx)
    new = make_rows(46, first_id=10_000, seed=3)
    append(idx, new)
    after = snapshot(idx)
    for name, data in before.items():  # every file of the old generation is as it was
        if name != CARD_FILE:
            assert after[name] == data
    folder = read_index_folder(idx, embeddings=True)
    assert folder.card.generation == 2 and len(folder.segments) == 2
    assert [s.info["count"] for s in folder.segments] == [300, 46]
    assert len(folder) == folder.card.count == 346
    _, ids = folder.search(new.embeddings, 1)
    np.testing.assert_array_equal(ids[:, 0], new.ids)


@pytest.mark.parametrize("factory", ["Flat", "IVF4,Flat", "HNSW16"])
def test_tombstones_hide_rows_and_a_merge_gives_the_same_neighbours(
    tmp_path: Path, factory: str
) -> None:
    idx = tmp_path / "idx"
    first = make_rows(200)
    write(idx, first, factory)
    second, third = make_rows(50, 5000, seed=1), make_rows(30, 9000, seed=2)
    append(idx, second, delete=first.ids[:20])
    append(idx, third, delete=np.concatenate([first.ids[20:25], second.ids[:5]]))
    folder = read_index_folder(idx)
    assert folder.card.count == 200 + 50 + 30 - 30 and len(folder.segments) == 3
    deleted = set(first.ids[:25].tolist()) | set(second.ids[:5].tolist())
    queries = unit_vectors(40, seed=9)
    sims, ids = answers(idx, queries)
    assert not deleted & set(ids.ravel().tolist())
    if factory == "Flat":  # exact: what brute force over the live rows says
        live = Rows.concat([first, second, third])
        live = live.take(np.flatnonzero(~np.isin(live.ids, list(deleted))))
        np.testing.assert_array_equal(ids, brute_force(live, queries, 10))

    with writer_lock(idx):
        merge_segments(read_index_folder(idx))
    merged = read_index_folder(idx)
    assert len(merged.segments) == 1 and merged.segments[0].info["n_deleted"] == 0
    assert merged.card.count == 250 and merged.card.generation == 4
    sims2, ids2 = answers(idx, queries)
    if factory == "HNSW16":  # a new graph: the same neighbour sets, ties aside
        assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, ids2, strict=True)]) >= 0.95
    else:
        np.testing.assert_array_equal(ids, ids2)
        np.testing.assert_allclose(sims, sims2, atol=1e-5)
    names = {p.name for p in idx.iterdir()}
    assert names == {CARD_FILE} | merged.card.files() | _previous_files(idx, 3)


def _previous_files(idx: Path, generation: int) -> set[str]:
    """Files still kept for readers of the previous generation (its card is not kept: the
    new segment files are all the folder needs beyond it)."""
    current = json.loads((idx / CARD_FILE).read_text())
    assert current["generation"] == generation + 1
    kept = {p.name for p in idx.iterdir()} - {CARD_FILE}
    ours = {s["faiss"] for s in current["segments"]} | {s["store"] for s in current["segments"]}
    return kept - ours - ({current["template"]} if current["template"] else set())


def test_small_segments_are_merged_automatically_within_a_bound() -> None:
    def seg(name: str, count: int, deleted: int = 0) -> dict:
        return {"name": name, "count": count, "n_deleted": deleted}

    c = card()
    c.segments = [seg("big", 1_000_000)] + [seg(f"s{i}", 46) for i in range(9)]
    assert merge_candidates(c) == []
    c.segments.append(seg("s9", 46))
    assert merge_candidates(c) == [f"s{i}" for i in range(10)]
    c.segments = [seg("big", 1_000_000, deleted=900_000)]  # too big to merge automatically
    assert merge_candidates(c) == []
    c.segments = [seg("a", 1000, deleted=600)]
    assert merge_candidates(c) == ["a"]


def test_a_single_file_folder_opens_and_is_upgraded_without_copying(tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    idx.mkdir()
    rows = make_rows(60)
    faiss.write_index(build_faiss("Flat", rows.embeddings, rows.ids), str(idx / FAISS_FILE))
    write_store(idx / STORE_FILE, rows, {"model_fingerprint": "f00d"})
    old = card()
    old.format, old.count, old.next_id = LEGACY_FORMAT, 60, 120
    raw = {k: v for k, v in old.to_dict().items() if k not in ("generation", "segments")}
    (idx / CARD_FILE).write_text(json.dumps(raw))
    legacy_bytes = {n: (idx / n).read_bytes() for n in (FAISS_FILE, STORE_FILE)}
    queries = unit_vectors(10, seed=4)
    legacy = read_index_folder(idx)
    assert len(legacy) == 60 and legacy.card.generation == 0
    sims, ids = legacy.search(queries, 5)

    append(idx, make_rows(10, first_id=1000, seed=8), delete=rows.ids[:3])  # upgrade on write
    upgraded = json.loads((idx / CARD_FILE).read_text())
    assert upgraded["format"] == "karyosearch-index/2" and upgraded["generation"] == 1
    assert upgraded["segments"][0]["faiss"] == FAISS_FILE
    assert {n: (idx / n).read_bytes() for n in (FAISS_FILE, STORE_FILE)} == legacy_bytes
    assert len(read_index_folder(idx)) == 67
    with writer_lock(idx):
        merge_segments(read_index_folder(idx))
    with writer_lock(idx):
        merge_segments(read_index_folder(idx))  # a second generation: the old files can go
    assert not (idx / FAISS_FILE).exists() and not (idx / STORE_FILE).exists()
    got = read_index_folder(idx).search(queries, 5)[1]
    keep = ~np.isin(ids, rows.ids[:3])
    assert set(got[keep].tolist()) <= set(got.ravel().tolist())


def test_concurrent_readers_during_many_writes_never_fail(tmp_path: Path) -> None:
    """Readers open while a writer appends, deletes and merges (40 writes or 3 s): every read
    opens one consistent generation (no 'inconsistent', no 'no card.json')."""
    idx = tmp_path / "idx"
    write(idx, make_rows(200))
    stop = threading.Event()
    failures: list[str] = []
    reads = [0]
    writes = [0]
    queries = unit_vectors(5, seed=11)

    def reader() -> None:
        while not stop.is_set():
            try:
                folder = read_index_folder(idx)
                assert len(folder) == folder.card.count
                _, ids = folder.search(queries, 5)
                assert set(ids.ravel().tolist()) <= set(folder.rows.ids.tolist())
                reads[0] += 1
                time.sleep(0.001)  # leave the writer some of the GIL
            except Exception as err:  # noqa: BLE001 - every failure is counted
                failures.append(f"{type(err).__name__}: {err}")

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 3.0
    next_id = 100_000
    try:
        while time.monotonic() < deadline and writes[0] < 40:
            rows = make_rows(5, first_id=next_id, seed=writes[0])
            next_id += 100
            folder = read_index_folder(idx)
            append(idx, rows, delete=folder.rows.ids[:2])
            writes[0] += 1
            if writes[0] % 7 == 0:
                with writer_lock(idx):
                    merge_segments(read_index_folder(idx))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert writes[0] >= 10 and reads[0] >= 10


def test_a_second_writer_of_the_same_generation_is_refused(tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    write(idx, make_rows(20))
    a, b = read_index_folder(idx), read_index_folder(idx)  # both read generation 1
    rows_a, rows_b = make_rows(3, 500, seed=1), make_rows(3, 900, seed=2)
    write_generation(idx, a.card, [(new_segment_index("Flat", rows_a), rows_a)])
    with pytest.raises(WriteConflictError, match=r"generation 1 -> 2\); run again"):
        write_generation(idx, b.card, [(new_segment_index("Flat", rows_b), rows_b)])
    folder = read_index_folder(idx)
    assert len(folder) == 23 and set(rows_a.ids) <= set(folder.rows.ids)


def test_non_finite_rows_are_refused_on_write_and_reported_on_read(tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    write(idx, make_rows(20))
    bad = make_rows(3, 500)
    bad.embeddings[1] = np.nan
    folder = read_index_folder(idx)
    with pytest.raises(NonFiniteIndexError, match="index --rebuild"):
        write_generation(idx, folder.card, [(build_faiss("Flat", bad.embeddings, bad.ids), bad)])
    # a folder written before writers checked: the old format holds a NaN row
    old = tmp_path / "old"
    old.mkdir()
    faiss.write_index(build_faiss("Flat", bad.embeddings, bad.ids), str(old / FAISS_FILE))
    write_store(old / STORE_FILE, bad, {"model_fingerprint": "f00d"})
    c = card()
    c.format, c.count = LEGACY_FORMAT, 3
    (old / CARD_FILE).write_text(json.dumps(c.to_dict()))
    with pytest.raises(NonFiniteIndexError, match=r"holds 1 non-finite vectors.*index --rebuild"):
        read_index_folder(old)
    assert len(read_index_folder(old, allow_non_finite=True)) == 3


# -- fault injection ------------------------------------------------------------------------


class Crash(BaseException):
    """A kill -9 stand-in: nothing after it runs, not even the writer's clean-up."""


def _fault_points(monkeypatch: pytest.MonkeyPatch, fail_at: int, kind: str) -> list[str]:
    """Make the `fail_at`-th file write, fsync or rename of a write fail: an OSError(ENOSPC)
    (`kind` 'enospc'), or a Crash after which the writer deletes nothing ('kill')."""
    calls: list[str] = []
    crashed = [False]

    def wrap(owner: object, name: str) -> None:
        real = getattr(owner, name)

        def faulty(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            calls.append(name)
            if len(calls) == fail_at:
                if kind == "kill":
                    crashed[0] = True
                    raise Crash
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(args[-1])[:80])
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, faulty)

    wrap(folder_mod.os, "fsync")
    wrap(folder_mod.os, "replace")
    wrap(folder_mod, "write_store")
    wrap(faiss, "write_index")
    wrap(folder_mod.np, "save")
    wrap(Path, "write_text")
    real_unlink = Path.unlink

    def unlink(self: Path, missing_ok: bool = False) -> None:
        if not crashed[0]:  # a killed writer cleans nothing up
            real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    return calls


@pytest.mark.parametrize("kind", ["enospc", "kill"])
@pytest.mark.parametrize("operation", ["append", "rewrite", "merge"])
def test_a_fault_at_every_write_fsync_and_rename_leaves_old_or_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, operation: str
) -> None:
    first, extra = make_rows(120), make_rows(10, first_id=5000, seed=5)
    queries = unit_vectors(8, seed=6)
    seed_dir = tmp_path / "seed"
    write(seed_dir, first, "IVF4,Flat")
    append(seed_dir, make_rows(10, first_id=3000, seed=4), delete=first.ids[:4])
    old_answers = answers(seed_dir, queries)

    def run(idx: Path) -> None:
        if operation == "append":
            append(idx, extra, delete=first.ids[4:6])
        elif operation == "rewrite":
            rows = read_index_folder(idx, embeddings=True).rows
            rows = Rows.concat([rows, extra])
            index = build_faiss("IVF4,Flat", rows.embeddings, rows.ids)
            with writer_lock(idx):
                folder_mod.write_index_folder(idx, card("IVF4,Flat"), index, rows)
        else:
            with writer_lock(idx):
                merge_segments(read_index_folder(idx))

    import shutil

    reference = tmp_path / "reference"
    shutil.copytree(seed_dir, reference)
    run(reference)
    new_answers = answers(reference, queries)

    outcomes = set()
    for n in range(1, 200):
        idx = tmp_path / f"try{n}"
        shutil.copytree(seed_dir, idx)
        with monkeypatch.context() as m:
            calls = _fault_points(m, n, kind)
            try:
                run(idx)
                completed = True
            except IndexWriteError as err:
                assert kind == "enospc" and "no space left on device writing" in str(err)
                assert "\n" not in str(err)
                completed = False
            except Crash:
                completed = False
        got = answers(idx, queries)  # reopens: the old or the new generation, consistent
        generation = read_index_folder(idx).card.generation
        if generation == 2:
            assert not completed
            np.testing.assert_array_equal(got[1], old_answers[1])
            np.testing.assert_allclose(got[0], old_answers[0], atol=1e-6)
            outcomes.add("old")
        else:
            assert generation == 3
            np.testing.assert_array_equal(got[1], new_answers[1])
            np.testing.assert_allclose(got[0], new_answers[0], atol=1e-6)
            outcomes.add("new")
        with writer_lock(idx):  # the next writer clears what a dead one left
            pass
        leftovers = {p.name for p in idx.iterdir()} - {CARD_FILE}
        assert leftovers <= read_index_folder(idx).card.files() | _kept(idx, seed_dir)
        if completed:
            break
    else:
        pytest.fail("the write never completed")
    assert n > 5 and outcomes == {"old", "new"}
    assert len(calls) == n - 1  # the last run completed with no fault reached


def _kept(idx: Path, seed_dir: Path) -> set[str]:
    """Files of the seed generation (kept as the previous generation for its readers)."""
    return {p.name for p in seed_dir.iterdir()} - {CARD_FILE}


WRITER = """
import sys
import numpy as np
from tests.search.test_segments import append
from tests.search.test_folder import make_rows
path = sys.argv[1]
for i in range(10_000):
    append(__import__("pathlib").Path(path), make_rows(20, first_id=10_000 + 100 * i, seed=i),
           delete=np.arange(0, 4, 2) + 40 * i)
    print(i, flush=True)
"""


def test_a_writer_killed_by_sigkill_leaves_a_readable_index(tmp_path: Path) -> None:
    """A real kill -9 at an arbitrary moment of a stream of writes (bounded: about 3 s)."""
    import subprocess
    import sys

    idx = tmp_path / "idx"
    write(idx, make_rows(100))
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": f"{repo}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(idx)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=repo,
        env=env,
    )
    try:
        for _ in range(3):  # let it get going, then kill it mid-stream
            assert proc.stdout.readline(), "the writer died"
        time.sleep(np.random.default_rng().uniform(0, 0.05))
    finally:
        proc.kill()
        proc.wait()
    folder = read_index_folder(idx)
    assert len(folder) == folder.card.count and folder.card.generation >= 4
    _, ids = folder.search(unit_vectors(3, seed=1), 5)
    assert set(ids.ravel().tolist()) <= set(folder.rows.ids.tolist())
    with writer_lock(idx):  # the next writer clears what the dead one left
        pass
    left = {p.name for p in idx.iterdir()} - {CARD_FILE} - folder.card.files()
    assert not any(name.startswith(".tmp-") for name in left)


def test_a_failed_write_to_a_new_folder_leaves_no_lock_and_no_folders(tmp_path: Path) -> None:
    target = tmp_path / "made" / "up" / "idx"
    with pytest.raises(RuntimeError), writer_lock(target):
        raise RuntimeError("the write failed")
    assert list(tmp_path.iterdir()) == []
    write(tmp_path / "real", make_rows(5))
    with writer_lock(tmp_path / "real"):
        pass
    assert (tmp_path / ".real.lock").exists()  # kept beside an index that exists
