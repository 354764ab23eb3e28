"""The engine: incremental indexing, removal and queries with a tiny random-weight encoder.

Random weights are fine for the mechanics (self-match, ids, incremental updates); search
quality is measured by benchmarks with a trained model.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import karyosearch.model.embed as inference
import karyosearch.search.segments as index_mod
from karyosearch.data.image import ImageError
from karyosearch.labels import CLASS_NAMES
from karyosearch.model.checkpoint import load_encoder, save_checkpoint
from karyosearch.model.encoder import Encoder, EncoderConfig, build_encoder
from karyosearch.model.predict import predict
from karyosearch.search.engine import SearchIndex, knn_vote
from karyosearch.search.faiss_index import FactoryError
from karyosearch.search.folder import ModelMismatchError, read_index_folder
from karyosearch.search.update import apply_update, build_or_update, plan_update, remove

from ..conftest import BIOIMLAB, chromosome_array, need, write_image

TINY = EncoderConfig(image_size=32, stem="standard")


def tiny_checkpoint(factory: pytest.TempPathFactory, name: str, seed: int) -> Path:
    """A tiny random-weight checkpoint, made once per test session."""
    path = factory.getbasetemp() / "checkpoints" / f"{name}.pt"
    if not path.exists():
        torch.manual_seed(seed)
        save_checkpoint(path, build_encoder(TINY))
    return path


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory, "tiny-a", 0)


@pytest.fixture(scope="session")
def enc(ckpt: Path) -> Encoder:
    """The tiny encoder, loaded once (saves reloading the checkpoint in every call)."""
    return load_encoder(ckpt)


@pytest.fixture(scope="session")
def other_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory, "tiny-b", 1)


def make_data(
    root: Path, classes: tuple[str, ...] = ("1", "2", "X", "Y"), per_class: int = 3
) -> Path:
    """A `folders` dataset of made-up chromosomes: root/<class>/img<i>.png."""
    for k, name in enumerate(classes):
        for i in range(per_class):
            write_image(
                root / name / f"img{i}.png", chromosome_array(40 + 7 * k, 14 + i, seed=10 * k + i)
            )
    return root


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every path the engine sends through the encoder."""
    seen: list[str] = []
    real = inference.embed_files

    def counting(encoder, paths, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        seen.extend(str(p) for p in paths)
        return real(encoder, paths, *args, **kwargs)

    monkeypatch.setattr(inference, "embed_files", counting)
    return seen


def test_build_then_self_match_first(tmp_path: Path, ckpt: Path) -> None:
    data = make_data(tmp_path / "data")
    report = build_or_update(tmp_path / "idx", data, ckpt)
    assert (report.added, report.updated, report.unchanged, report.removed) == (12, 0, 0, 0)
    assert report.count == 12 and report.rejected == [] and report.factory == "Flat"
    index = SearchIndex.open(tmp_path / "idx")
    assert index.card.model_path == str(ckpt.resolve())
    queries = sorted(str(p) for p in data.rglob("*.png"))
    results = index.query_images(queries, k=4)
    for query, r in zip(queries, results, strict=True):
        first = r.neighbours[0]
        assert r.query == query and first.path == query and first.rank == 1
        assert first.score == pytest.approx(1.0, abs=1e-4)
        assert [n.rank for n in r.neighbours] == [1, 2, 3, 4]
        assert first.label == Path(query).parent.name and first.cell_id is None
        assert r.predicted.label in CLASS_NAMES and r.predicted.kind == "cosine"
        assert -1 <= r.predicted.score <= 1 and r.predicted.margin >= 0
        assert r.knn_label in CLASS_NAMES
    d = results[0].to_dict()
    assert set(d) >= {"query", "predicted", "knn_label", "neighbours"}
    assert set(d["predicted"]) >= {"label", "score", "margin"}
    assert set(d["neighbours"][0]) >= {"rank", "id", "score", "label", "path", "cell_id"}


def test_update_embeds_only_new_and_changed_files(
    tmp_path: Path, enc: Encoder, counted: list[str]
) -> None:
    data = make_data(tmp_path / "data")
    build_or_update(tmp_path / "idx", data, enc)
    assert len(counted) == 12
    before = read_index_folder(tmp_path / "idx", embeddings=True)
    counted.clear()

    again = build_or_update(tmp_path / "idx", data, enc)
    assert counted == [] and (again.unchanged, again.added, again.written) == (12, 0, False)

    new = write_image(data / "7" / "new.png", chromosome_array(70, 20, seed=77))
    changed = data / "1" / "img0.png"
    write_image(changed, chromosome_array(90, 18, seed=123))
    report = build_or_update(tmp_path / "idx", data, enc)
    assert sorted(counted) == sorted([str(new.resolve()), str(changed.resolve())])
    assert (report.added, report.updated, report.unchanged, report.count) == (1, 1, 11, 13)

    after = read_index_folder(tmp_path / "idx", embeddings=True)
    old_pos = before.rows.paths.index(str(changed.resolve()))
    new_pos = after.rows.paths.index(str(changed.resolve()))
    assert after.rows.ids[new_pos] == before.rows.ids[old_pos]  # a changed file keeps its id
    assert not np.allclose(after.rows.embeddings[new_pos], before.rows.embeddings[old_pos])
    assert after.rows.ids[after.rows.paths.index(str(new.resolve()))] == before.rows.ids.max() + 1
    assert after.rows.labels[after.rows.paths.index(str(new.resolve()))] == CLASS_NAMES.index("7")
    r = SearchIndex.open(tmp_path / "idx", model=enc).query_images([changed], k=1)[0]
    assert r.neighbours[0].path == str(changed.resolve())


def test_corrupt_image_is_reported_and_skipped(tmp_path: Path, enc: Encoder) -> None:
    data = make_data(tmp_path / "data")
    bad = data / "2" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    blank = write_image(data / "X" / "blank.png", np.zeros((30, 30), np.uint8))
    report = build_or_update(tmp_path / "idx", data, enc)
    assert report.count == 12 and report.added == 12
    reasons = {r["path"]: r["reason"] for r in report.rejected}
    assert set(reasons) == {str(bad.resolve()), str(blank.resolve())}
    assert "corrupt" in reasons[str(bad.resolve())] or "not an image" in reasons[str(bad.resolve())]
    assert "all background" in reasons[str(blank.resolve())]


def test_nothing_readable_is_an_error_and_writes_nothing(tmp_path: Path, enc: Encoder) -> None:
    (tmp_path / "data" / "1").mkdir(parents=True)
    (tmp_path / "data" / "1" / "a.png").write_bytes(b"junk")
    with pytest.raises(Exception, match="nothing to index"):
        build_or_update(tmp_path / "idx", tmp_path / "data", enc)
    assert not (tmp_path / "idx").exists()


def test_remove_files_and_folders_and_prune(tmp_path: Path, enc: Encoder) -> None:
    data = make_data(tmp_path / "data")
    build_or_update(tmp_path / "idx", data, enc)
    report = remove(tmp_path / "idx", [data / "1" / "img0.png", data / "Y", tmp_path / "nope.png"])
    assert (report.removed, report.count) == (4, 8)
    assert report.not_found == [str(tmp_path / "nope.png")]
    index = SearchIndex.open(tmp_path / "idx", model=enc)
    paths = set(index.rows.paths)
    assert str((data / "1" / "img0.png").resolve()) not in paths
    assert not any("/Y/" in p for p in paths)
    r = index.query_images([data / "Y" / "img0.png"], k=20)[0]
    assert len(r.neighbours) == 8 and all(n.label != "Y" for n in r.neighbours)

    # removed files come back on the next update; files gone from the folder stay unless pruned
    shutil.rmtree(data / "X")
    report = build_or_update(tmp_path / "idx", data, enc)
    assert (report.added, report.removed, report.count) == (4, 0, 12)
    report = build_or_update(tmp_path / "idx", data, enc, prune=True)
    assert (report.removed, report.count) == (3, 9)


def test_exception_mid_write_keeps_the_previous_index(
    tmp_path: Path, enc: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_data(tmp_path / "data")
    build_or_update(tmp_path / "idx", data, enc)
    write_image(data / "5" / "new.png", chromosome_array(50, 16, seed=5))
    real = index_mod.write_store

    def crash_after_writing(path, rows, attrs=None):  # noqa: ANN001
        real(path, rows, attrs)
        raise KeyboardInterrupt

    monkeypatch.setattr(index_mod, "write_store", crash_after_writing)
    with pytest.raises(KeyboardInterrupt):
        build_or_update(tmp_path / "idx", data, enc)
    monkeypatch.setattr(index_mod, "write_store", real)
    assert len(SearchIndex.open(tmp_path / "idx", model=enc)) == 12
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []
    report = build_or_update(tmp_path / "idx", data, enc)  # the next run picks up the new file
    assert (report.added, report.count) == (1, 13)


def test_another_model_is_refused(
    tmp_path: Path, ckpt: Path, enc: Encoder, other_ckpt: Path
) -> None:
    data = make_data(tmp_path / "data")
    build_or_update(tmp_path / "idx", data, enc)
    with pytest.raises(ModelMismatchError, match="was built with model"):
        build_or_update(tmp_path / "idx", data, other_ckpt)
    with pytest.raises(ModelMismatchError):
        SearchIndex.open(tmp_path / "idx", model=other_ckpt)
    # the checkpoint the card names was overwritten by another model: refused at query time
    moved = tmp_path / "m.pt"
    shutil.copy(ckpt, moved)
    build_or_update(tmp_path / "idx2", data, moved)
    shutil.copy(other_ckpt, moved)
    with pytest.raises(ModelMismatchError):
        SearchIndex.open(tmp_path / "idx2").query_images([data / "1" / "img0.png"])


def test_factory_strings_train_rebuild_and_refuse(
    tmp_path: Path, enc: Encoder, counted: list[str]
) -> None:
    data = make_data(tmp_path / "data")
    report = build_or_update(tmp_path / "idx", data, enc, factory="IVF4,Flat")
    assert report.factory == "IVF4,Flat"
    index = SearchIndex.open(tmp_path / "idx", model=enc)
    assert index.card.search_params == "nprobe=4"
    q = data / "2" / "img1.png"
    assert index.query_images([q], k=3)[0].neighbours[0].path == str(q.resolve())

    counted.clear()
    report = build_or_update(tmp_path / "idx", data, enc, factory="HNSW16")  # from stored vectors
    assert counted == [] and report.written and report.factory == "HNSW16"
    index = SearchIndex.open(tmp_path / "idx", model=enc)
    assert index.card.factory == "HNSW16" and len(index) == 12
    assert index.query_images([q], k=3)[0].neighbours[0].path == str(q.resolve())
    remove(tmp_path / "idx", [q])  # HNSW cannot remove: rebuilt from the store
    assert len(SearchIndex.open(tmp_path / "idx", model=enc)) == 11

    counted.clear()
    with pytest.raises(FactoryError, match="64 IVF lists but only"):
        build_or_update(tmp_path / "idx3", data, enc, factory="IVF64,Flat")
    assert counted == []  # refused before embedding anything
    with pytest.raises(FactoryError):
        plan_update(tmp_path / "idx4", data, enc, factory="NoSuchThing")


def test_real_bioimlab_cell(tmp_path: Path, enc: Encoder) -> None:
    cell = need(BIOIMLAB) / "single_chromosomes" / "1"
    shutil.copytree(cell, tmp_path / "data" / "single_chromosomes" / "1")
    report = build_or_update(tmp_path / "idx", tmp_path / "data", enc)
    assert report.count == 46 and report.rejected == []
    index = SearchIndex.open(tmp_path / "idx", model=enc)
    assert set(index.rows.cell_ids) == {"1"} and set(index.rows.patient_ids) == {"1"}
    query = tmp_path / "data" / "single_chromosomes" / "1" / "1 21b.bmp"
    r = index.query_images([query], k=5)[0]
    assert r.neighbours[0].path == str(query.resolve()) and r.neighbours[0].label == "21"
    assert r.neighbours[0].cell_id == "1"


def test_query_errors_name_the_file(tmp_path: Path, enc: Encoder) -> None:
    data = make_data(tmp_path / "data", per_class=1)
    build_or_update(tmp_path / "idx", data, enc)
    index = SearchIndex.open(tmp_path / "idx", model=enc)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ImageError, match="notes.txt"):
        index.query_images([tmp_path / "notes.txt"])
    with pytest.raises(ImageError, match="no such file"):
        index.query_images([tmp_path / "missing.png"])


def test_query_vectors_without_scores_and_resnext_softmax(tmp_path: Path) -> None:
    torch.manual_seed(0)
    encoder = build_encoder(EncoderConfig(arch="resnext", image_size=32, stem="standard"))
    data = make_data(tmp_path / "data", per_class=1)
    build_or_update(tmp_path / "idx", data, encoder)
    index = SearchIndex.open(tmp_path / "idx", model=encoder)
    r = index.query_images([data / "1" / "img0.png"], k=2)[0]
    assert r.predicted.kind == "softmax" and 0 <= r.predicted.score <= 1
    vectors = read_index_folder(tmp_path / "idx", embeddings=True).rows.embeddings[:2]
    results = index.query_vectors(vectors, k=100)
    assert results[0].predicted is None and results[0].query == "vector 0"
    assert len(results[0].neighbours) == 4


def test_predict_and_knn_vote() -> None:
    cos = np.zeros((1, 24))
    cos[0, 22], cos[0, 3] = 0.9, 0.7
    p = predict(cos, "proxy-resnext-cbam")[0]
    assert (p.label, p.kind) == ("X", "cosine")
    assert p.score == pytest.approx(0.9) and p.margin == pytest.approx(0.2)
    logits = np.zeros((1, 24))
    logits[0, 0] = 10.0
    p = predict(logits, "resnext")[0]
    assert p.label == "1" and p.kind == "softmax" and 0.99 < p.score <= 1 and p.margin > 0.99
    assert knn_vote([1, 1, 2], [0.5, 0.5, 0.9]) == 1  # majority
    assert knn_vote([1, 2, 2, 1], [0.9, 0.5, 0.5, 0.8]) == 1  # tie: larger summed score
    assert knn_vote([-1, -1], [0.9, 0.8]) is None


def _edit_card(index_dir: Path, **changes: object) -> None:
    import json

    card_file = index_dir / "card.json"
    card = json.loads(card_file.read_text())
    card.update(changes)
    card_file.write_text(json.dumps(card))


@pytest.mark.parametrize(
    "field, value, says",
    [
        ("arch", "resnext", "arch 'resnext'"),
        ("image_size", 64, "image size 64"),
    ],
)
def test_the_cards_arch_and_image_size_are_checked_on_load(
    tmp_path: Path, enc: Encoder, field: str, value: object, says: str
) -> None:
    """The card's arch and image size must be the encoder's, not only its fingerprint."""
    data = make_data(tmp_path / "data")
    build_or_update(tmp_path / "idx", data, enc)
    _edit_card(tmp_path / "idx", **{field: value})
    with pytest.raises(ModelMismatchError, match=says):
        SearchIndex.open(tmp_path / "idx", model=enc)
    with pytest.raises(ModelMismatchError, match=says):
        build_or_update(tmp_path / "idx", data, enc)


def test_the_cards_preprocessing_version_is_checked_on_load(tmp_path: Path, enc: Encoder) -> None:
    from karyosearch.search.folder import IndexFolderError

    build_or_update(tmp_path / "idx", make_data(tmp_path / "data"), enc)
    _edit_card(tmp_path / "idx", preprocess_version=0)
    with pytest.raises(IndexFolderError, match="prepared with v0"):
        read_index_folder(tmp_path / "idx")


def test_factory_auto_records_what_it_built_and_is_kept_on_update(tmp_path: Path, ckpt: Path):
    data = make_data(tmp_path / "data")
    report = build_or_update(tmp_path / "idx", data, ckpt, factory="auto")
    assert report.factory == "Flat"  # what `index` prints: the choice, not the word
    card = read_index_folder(tmp_path / "idx").card
    assert card.factory == "Flat"  # a dozen vectors: exact search; never the word "auto"
    again = plan_update(tmp_path / "idx", data, ckpt, factory="auto")
    assert again.factory == "Flat" and not again.rebuild  # auto again: the card's choice


def test_factory_auto_chooses_again_when_a_flat_index_outgrew_it(
    tmp_path: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An archive indexed exactly (Flat) that grew past FLAT_MAX: `--factory auto` given again
    builds what auto builds at that size, from the stored vectors, and the answers stay."""
    from karyosearch.search import faiss_index

    data = make_data(tmp_path / "data")
    build_or_update(tmp_path / "idx", data, ckpt)  # Flat: no --factory
    monkeypatch.setattr(faiss_index, "FLAT_MAX", 5)  # 12 crops are now "large"
    monkeypatch.setattr(faiss_index, "auto_factory", lambda n, dimension: "IVF2,Flat")
    plan = plan_update(tmp_path / "idx", data, ckpt, factory="auto")
    assert plan.rebuild and not plan.to_embed  # nothing re-embedded: the stored vectors serve
    report = apply_update(plan)
    assert report.factory == "IVF2,Flat" and report.count == 12
    folder = read_index_folder(tmp_path / "idx", embeddings=True)
    assert folder.card.factory == "IVF2,Flat" and folder.card.search_params.startswith("nprobe=")
    assert plan_update(tmp_path / "idx", data, ckpt, factory="auto").rebuild is False  # decided
    vectors = folder.rows.embeddings
    _, found = folder.search(vectors, 1)
    assert (found[:, 0] == folder.rows.ids).all()  # every crop still finds itself first


def test_an_index_of_a_v1_encoder_keeps_working_with_v1_crops(tmp_path: Path, enc: Encoder) -> None:
    """An earlier karyosearch's encoder (preprocessing v1) and the index it built stay valid:
    files are still cropped its way (a faint speck counts in v1's box), so every stored crop
    finds itself at similarity 1, and an encoder of another preprocessing version is refused."""
    from dataclasses import replace

    from karyosearch.data.image import PREPROCESS_VERSION, load, read_grey

    data = make_data(tmp_path / "data")
    for path in data.rglob("*.png"):
        grey = read_grey(path)
        specked = np.zeros((grey.shape[0] + 12, grey.shape[1] + 12), np.uint8)
        specked[6:-6, 6:-6] = grey
        specked[0:2, 0:2] = 60  # a faint speck in the corner
        write_image(path, specked)
    assert load(path, version=1).shape != load(path, version=2).shape
    old = build_encoder(replace(TINY, preprocess_version=1))
    old.load_state_dict(enc.state_dict())
    v1 = save_checkpoint(tmp_path / "v1.pt", old)
    build_or_update(tmp_path / "idx", data, tmp_path / "v1.pt")
    index = SearchIndex.open(tmp_path / "idx")
    assert index.card.preprocess_version == 1 and index.card.model_fingerprint == v1.fingerprint
    queries = sorted(str(p) for p in data.rglob("*.png"))
    for query, r in zip(queries, index.query_images(queries, k=1), strict=True):
        assert r.neighbours[0].path == query
        assert r.neighbours[0].score == pytest.approx(1.0, abs=1e-4)
    # the same weights (so the same fingerprint) on today's crops would be another model
    assert enc.fingerprint == v1.fingerprint and PREPROCESS_VERSION != 1
    with pytest.raises(ModelMismatchError, match="preprocessing version 1 .the model: 2"):
        SearchIndex.open(tmp_path / "idx", model=enc)
