"""Batched embedding of files and arrays, and the one classifier on its scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from karyosearch.data.image import foreground_area, load, prepare_input
from karyosearch.evaluation.metrics import nearest_proxy_predict
from karyosearch.labels import CLASS_NAMES
from karyosearch.model import EMBEDDING_DIM
from karyosearch.model.embed import embed_arrays, embed_files
from karyosearch.model.encoder import Encoder, EncoderConfig, build_encoder
from karyosearch.model.predict import log_probs, predict, predicted_classes

from ..conftest import chromosome_array, write_image


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    torch.manual_seed(0)
    return build_encoder(EncoderConfig(image_size=32, stem="standard")).eval()


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    paths = [
        write_image(tmp_path / f"c{i}.png", chromosome_array(30 + 5 * i, 12, seed=i))
        for i in range(5)
    ]
    (tmp_path / "bad.png").write_bytes(b"not an image")
    return [*paths[:2], tmp_path / "bad.png", *paths[2:]]


def test_files_give_unit_vectors_scores_and_areas_in_order(
    encoder: Encoder, files: list[Path]
) -> None:
    calls: list[int] = []
    got = embed_files(encoder, files, batch_size=2, fast=False, progress=calls.append)
    good = [f for f in files if f.name != "bad.png"]
    assert got.paths == [str(f) for f in good]
    assert got.embeddings.shape == (5, EMBEDDING_DIM) and got.embeddings.dtype == np.float32
    assert np.allclose(np.linalg.norm(got.embeddings, axis=1), 1.0, atol=1e-4)
    assert got.scores.shape == (5, encoder.cfg.num_classes)
    assert [e.path for e in got.errors] == [str(files[2])] and got.errors[0].reason
    assert got.areas.tolist() == [foreground_area(load(f)) for f in good]
    assert sum(calls) == len(files)  # progress counts every file, read or not


def test_files_and_arrays_embed_the_same_pixels(encoder: Encoder, files: list[Path]) -> None:
    good = [f for f in files if f.name != "bad.png"]
    got = embed_files(encoder, good, fast=False)
    arrays = np.stack([prepare_input(load(f), 32) for f in good])
    emb, scores = embed_arrays(encoder, arrays, batch_size=3, fast=False)
    assert np.allclose(emb, got.embeddings, atol=1e-5)
    assert np.allclose(scores, got.scores, atol=1e-5)
    with torch.no_grad():
        direct = encoder(torch.as_tensor(arrays).unsqueeze(1)).numpy()
    assert np.allclose(direct, emb, atol=1e-4)


def test_files_are_cropped_as_their_encoder_was_trained(tmp_path: Path) -> None:
    """An encoder of preprocessing v1 (an earlier karyosearch's) gets v1 crops: a faint speck
    in the corner stays in its content box; today's encoders get the box without it."""
    specked = np.zeros((70, 40), np.uint8)
    specked[10:60, 10:30] = chromosome_array(50, 20, seed=4)
    specked[1:3, 1:3] = 60
    path = write_image(tmp_path / "specked.png", specked)
    assert load(path, version=1).shape != load(path, version=2).shape
    for version in (1, 2):
        torch.manual_seed(0)
        cfg = EncoderConfig(image_size=32, stem="standard", preprocess_version=version)
        enc = build_encoder(cfg).eval()
        got = embed_files(enc, [path], fast=False)
        want, _ = embed_arrays(enc, prepare_input(load(path, version=version), 32)[None], 1, False)
        assert np.allclose(got.embeddings, want, atol=1e-5)
        assert got.areas.tolist() == [foreground_area(load(path, version=version))]


def test_nothing_to_embed_gives_empty_arrays(encoder: Encoder) -> None:
    got = embed_files(encoder, [])
    assert got.embeddings.shape == (0, EMBEDDING_DIM) and got.scores.shape == (0, 24)
    emb, scores = embed_arrays(encoder, np.zeros((0, 32, 32), np.float32))
    assert emb.shape == (0, EMBEDDING_DIM) and scores.shape == (0, 24)


def test_the_one_classifier_is_the_nearest_proxy(encoder: Encoder, files: list[Path]) -> None:
    got = embed_files(encoder, [f for f in files if f.name != "bad.png"], fast=False)
    proxies = encoder.unit_proxies().detach().numpy()
    assert predicted_classes(got.scores).tolist() == (
        nearest_proxy_predict(got.embeddings, proxies).tolist()
    )
    labels = [p.label for p in predict(got.scores, "proxy-resnext-cbam")]
    assert labels == [CLASS_NAMES[c] for c in predicted_classes(got.scores)]
    lp = log_probs(got.scores, 0.05)
    assert (
        np.allclose(np.exp(lp).sum(axis=1), 1.0)
        and (lp.argmax(1) == predicted_classes(got.scores)).all()
    )


def test_non_finite_outputs_are_refused_naming_the_files(tmp_path: Path) -> None:
    from karyosearch.model.embed import NonFiniteError

    torch.manual_seed(0)
    broken = build_encoder(EncoderConfig(image_size=32, stem="standard")).eval()
    with torch.no_grad():
        broken.norm.weight[0] = float("nan")  # what corrupt weights that still load give
    paths = [write_image(tmp_path / f"c{i}.png", chromosome_array(seed=i)) for i in range(3)]
    with pytest.raises(NonFiniteError) as err:
        embed_files(broken, paths, batch_size=2)
    assert "non-finite" in str(err.value) and str(paths[0]) in str(err.value)
    arrays = np.stack([prepare_input(load(p), 32) for p in paths])
    with pytest.raises(NonFiniteError, match="3 of 3 images") as err:
        embed_arrays(broken, arrays)
    assert err.value.rows == [0, 1, 2]
