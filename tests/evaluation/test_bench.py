"""The benchmark library: JSON keys and ranges, figures, and refusing a leaking split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from karyosearch.data.datasets import read_dataset
from karyosearch.data.rulings import CONTRADICTED_CELLS, audited, in_cells
from karyosearch.data.splits import make_split
from karyosearch.errors import UserError
from karyosearch.evaluation.bench import evaluate
from karyosearch.evaluation.figures import figures
from karyosearch.evaluation.metrics import recall_at_k
from karyosearch.evaluation.provenance import resolve_split
from karyosearch.labels import CLASS_NAMES
from karyosearch.model.checkpoint import load_encoder, save_checkpoint
from karyosearch.model.encoder import EncoderConfig, build_encoder

from ..conftest import chromosome_array, write_image

CLASSES = ("1", "2", "7", "13", "X", "Y")
PER_CLASS = 8
DESIGN_KEYS = {"split", "seed", "n_test", "accuracy", "precision", "recall", "f1", "recall_at_k"}


def make_folder_dataset(root: Path) -> Path:
    """Six classes x eight made-up chromosomes in the `folders` layout."""
    for c, name in enumerate(CLASSES):
        for i in range(PER_CLASS):
            img = chromosome_array(40 + 4 * c, 16 + c, seed=100 * c + i)
            write_image(root / name / f"{name}_{i}.png", img)
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(dataset root, checkpoint) of an untrained 32 px encoder 'trained' on split paper/0."""
    base = tmp_path_factory.mktemp("bench")
    data = make_folder_dataset(base / "data")
    model = build_encoder(EncoderConfig(arch="proxy-resnext-cbam", image_size=32, stem="standard"))
    record = {
        "split": "paper",
        "seed": 0,
        "dataset": str(data.resolve()),
        "layout": "folders",
        "preset": "default",
        "train_seconds": 1.5,
        "device": "cpu",
    }
    ckpt = base / "m.pt"
    save_checkpoint(ckpt, model, train=record)
    return data, ckpt


def check_result(result: dict, n_expected: int) -> None:
    assert DESIGN_KEYS <= set(result)
    assert set(result["recall_at_k"]) == {"1", "2", "4", "8"}
    assert result["n_test"] == n_expected
    for key in ("accuracy", "precision", "recall", "f1"):
        assert 0.0 <= result[key] <= 1.0
    values = [result["recall_at_k"][k] for k in ("1", "2", "4", "8")]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert values == sorted(values)  # Recall@K never falls as K grows
    assert list(result["per_class_accuracy"]) == list(CLASS_NAMES)
    cm = np.asarray(result["confusion"])
    assert cm.shape == (24, 24) and cm.sum() == n_expected
    json.dumps(result, allow_nan=False)  # strict JSON: NaN was written as null


def test_evaluate_keys_and_ranges(tiny: tuple[Path, Path]) -> None:
    data, ckpt = tiny
    dataset = read_dataset(data)
    encoder = load_encoder(ckpt)
    ev = evaluate(encoder, dataset, batch_size=16)
    expected = make_split("paper", dataset.groups(), 0).test
    check_result(ev.result, len(expected))
    r = ev.result
    assert (r["split"], r["seed"], r["arch"], r["image_size"]) == (
        "paper",
        0,
        "proxy-resnext-cbam",
        32,
    )
    assert r["fingerprint"] == encoder.fingerprint
    assert r["preset"] == "default" and r["train_seconds"] == 1.5
    assert r["dataset"]["layout"] == "folders" and r["dataset"]["images"] == len(dataset)
    assert r["warnings"] == [] and r["errors"] == []
    # classes with no test image have no per-class accuracy (null in JSON)
    present = {CLASS_NAMES[dataset.items[i].label] for i in expected}
    assert all((v is None) == (k not in present) for k, v in r["per_class_accuracy"].items())
    assert sorted(ev.paths) == sorted(dataset.items[i].path for i in expected)
    assert ev.embeddings.shape == (len(expected), 2048)
    assert np.allclose(np.linalg.norm(ev.embeddings, axis=1), 1.0, atol=1e-4)
    assert r["accuracy"] == pytest.approx(float(np.mean(ev.pred == ev.labels)))


def test_figures_are_written(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    data, ckpt = tiny
    ev = evaluate(load_encoder(ckpt), read_dataset(data), batch_size=16)
    written = figures(ev.result, ev.embeddings, ev.labels, tmp_path / "fig")
    assert {p.name for p in written} == {"tsne.png", "confusion.png", "recall_at_k.png"}
    for p in written:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_refuses_a_split_that_overlaps_training(tiny: tuple[Path, Path]) -> None:
    data, ckpt = tiny
    dataset, encoder = read_dataset(data), load_encoder(ckpt)
    with pytest.raises(UserError, match="seed"):
        evaluate(encoder, dataset, seed=1)
    with pytest.raises(UserError, match="split"):
        evaluate(encoder, dataset, split="cell")
    # asking for what the model trained on is fine
    assert resolve_split(encoder.train_record, dataset, "paper", 0) == ("paper", 0, [])


def test_another_dataset_may_use_any_split(tiny: tuple[Path, Path]) -> None:
    data, _ = tiny
    dataset = read_dataset(data)
    record = {"split": "paper", "seed": 0, "dataset": "/elsewhere/gband612", "layout": "gband"}
    name, seed, warnings = resolve_split(record, dataset, "cell", 3)
    assert (name, seed) == ("cell", 3) and "another dataset" in warnings[0]
    # a copy of the same dataset under another parent folder is the same dataset
    copy = {**record, "dataset": f"/mnt/copy/{dataset.root.name}", "layout": "folders"}
    with pytest.raises(UserError):
        resolve_split(copy, dataset, "cell", 3)


def test_a_leak_through_an_init_checkpoint_is_refused(tiny: tuple[Path, Path]) -> None:
    data, _ = tiny
    dataset = read_dataset(data)
    here = {"dataset": str(dataset.root), "layout": dataset.layout}
    # fine-tuned on another dataset from a checkpoint trained on seed 1 of this one
    record = {"split": "paper", "seed": 0, "dataset": "/elsewhere/gband612", "layout": "gband"}
    leaky = {**record, "init": {**here, "split": "paper", "seed": 1}}
    with pytest.raises(UserError, match="started from .*split seed 1"):
        resolve_split(leaky, dataset, "paper", 0)
    assert resolve_split(leaky, dataset, "paper", 1)[:2] == ("paper", 1)
    # two generations back counts too; another dataset's ancestor does not
    deep = {**here, "split": "paper", "seed": 0, "init": {**record, "init": leaky["init"]}}
    with pytest.raises(UserError, match="started from"):
        resolve_split(deep, dataset, "paper", 0)
    clean = {**here, "split": "paper", "seed": 0, "init": record}
    assert resolve_split(clean, dataset, None, None) == ("paper", 0, [])


def test_a_dataset_trained_on_jointly_counts_and_sets_the_default_split(
    tiny: tuple[Path, Path],
) -> None:
    data, _ = tiny
    dataset = read_dataset(data)
    here = {"dataset": str(dataset.root), "layout": dataset.layout}
    # trained on another dataset (seed 0) with this one's training part of seed 2 (--also)
    record = {"split": "paper", "seed": 0, "dataset": "/elsewhere/bioimlab", "layout": "bioimlab"}
    joint = {**record, "also": {**here, "split": "cell", "seed": 2, "n_train": 30}}
    assert resolve_split(joint, dataset, None, None) == ("cell", 2, [])
    with pytest.raises(UserError, match="jointly .*split seed 2"):
        resolve_split(joint, dataset, "cell", 0)
    with pytest.raises(UserError, match="jointly .*'cell' split"):
        resolve_split(joint, dataset, "paper", 2)
    # an --also part of an --init checkpoint counts as well
    grandchild = {**record, "seed": 1, "init": joint}
    with pytest.raises(UserError, match="started from .*jointly"):
        resolve_split(grandchild, dataset, "cell", 0)
    # a model initialised from one trained here tests, by default, where that one did
    child = {**record, "init": {**here, "split": "cell", "seed": 1}}
    assert resolve_split(child, dataset, None, None) == ("cell", 1, [])


def test_unrecorded_checkpoint_warns_and_resnext_uses_logits(tiny: tuple[Path, Path]) -> None:
    data, _ = tiny
    dataset = read_dataset(data)
    encoder = build_encoder(EncoderConfig(arch="resnext", image_size=32, stem="standard")).eval()
    ev = evaluate(encoder, dataset, batch_size=16)
    check_result(ev.result, len(make_split("paper", dataset.groups(), 0).test))
    assert ev.result["classifier"] == "argmax logits"
    assert "does not record" in ev.result["warnings"][0]


def test_audited_figures_leave_out_the_contradicted_cells(
    tiny: tuple[Path, Path], tmp_path: Path
) -> None:
    # the tiny crops again, in a manifest that puts every third one in a cell the ruling names
    data, ckpt = tiny
    folders = read_dataset(data)
    rows = ["path,label,cell_id"]
    for i, it in enumerate(folders.items):
        cell = "97002569.11.tiff" if i % 3 == 0 else f"1000{i % 4}.1.tiff"
        rows.append(f"{it.path},{CLASS_NAMES[it.label]},{cell}")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    dataset = read_dataset(manifest)
    encoder = load_encoder(ckpt)
    ev = evaluate(encoder, dataset, split="paper", seed=0, batch_size=16)
    cell_of = {it.path: it.cell_id for it in dataset.items}
    kept = np.asarray([cell_of[p] != "97002569.11.tiff" for p in ev.paths])
    assert 0 < kept.sum() < len(kept)  # the split put crops of both kinds on the test side
    audit = ev.result["audited"]
    assert audit["n_test"] == kept.sum() and audit["left_out_cells"] == list(CONTRADICTED_CELLS)
    assert audit["accuracy"] == pytest.approx(float(np.mean(ev.pred[kept] == ev.labels[kept])))
    r1 = recall_at_k(ev.embeddings[kept], ev.labels[kept], (1,))[1]
    assert audit["recall_at_k"]["1"] == pytest.approx(r1)
    # without such cells there is nothing to audit
    assert "audited" not in evaluate(encoder, folders, batch_size=16).result


def test_a_cell_id_names_a_ruled_cell_by_its_whole_name() -> None:
    assert in_cells("97002302.18.tiff", CONTRADICTED_CELLS)
    assert in_cells("97002302.18", CONTRADICTED_CELLS)
    assert not in_cells("97002302.180.tiff", CONTRADICTED_CELLS)  # another cell
    assert not in_cells("97002302.1", CONTRADICTED_CELLS) and not in_cells(None, CONTRADICTED_CELLS)
    assert audited(["97002302.18.tiff", None, "1.2"]).tolist() == [False, True, True]
