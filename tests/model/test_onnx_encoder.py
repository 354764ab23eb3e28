"""Queries on ONNX Runtime: the same neighbours and classes as PyTorch, from a cached export
made once per model, and no torch import on the way."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import karyosearch.model.onnx_encoder as onnx_encoder
from karyosearch.search.engine import SearchIndex
from karyosearch.search.update import build_or_update

from ..search.test_engine import make_data, tiny_checkpoint

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def built(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, Path]:
    monkeypatch.setenv("KARYOSEARCH_CPU_BF16", "0")  # torch in float32, as the export
    data = make_data(tmp_path / "data")
    build_or_update(tmp_path / "idx", data, tiny_checkpoint(tmp_path_factory, "tiny-a", 0))
    return tmp_path / "idx", data


def test_onnx_queries_match_torch_and_reuse_the_cached_export(
    built: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    index_dir, data = built
    queries = sorted(str(p) for p in data.rglob("*.png"))
    on_torch = SearchIndex.open(index_dir).query_images(queries, k=5)
    monkeypatch.setenv("KARYOSEARCH_ONNX", "1")
    index = SearchIndex.open(index_dir)
    assert isinstance(index.encoder, onnx_encoder.OnnxEncoder)
    assert index.encoder.fingerprint == index.card.model_fingerprint
    assert onnx_encoder.cached_path(index.card.model_fingerprint).is_file()
    on_onnx = index.query_images(queries, k=5)
    for a, b in zip(on_torch, on_onnx, strict=True):
        assert [n.id for n in a.neighbours] == [n.id for n in b.neighbours]
        scores = [n.score for n in a.neighbours], [n.score for n in b.neighbours]
        assert np.allclose(*scores, atol=1e-4)
        assert a.predicted.label == b.predicted.label and a.call.label == b.call.label

    def no_export(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached export should have been used")

    monkeypatch.setattr(onnx_encoder, "export_onnx", no_export)
    again = SearchIndex.open(index_dir)
    assert isinstance(again.encoder, onnx_encoder.OnnxEncoder)


def test_disabled_or_foreign_exports_fall_back_to_torch(
    built: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    index_dir, _ = built
    index = SearchIndex.open(index_dir)
    assert not isinstance(index.encoder, onnx_encoder.OnnxEncoder)  # KARYOSEARCH_ONNX=0
    monkeypatch.setenv("KARYOSEARCH_ONNX", "1")
    path = onnx_encoder.cached_path(index.card.model_fingerprint)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"truncated")  # an unreadable cache entry is made again
    exported = SearchIndex.open(index_dir).encoder
    assert isinstance(exported, onnx_encoder.OnnxEncoder) and path.stat().st_size > 1000


def test_a_query_on_onnx_runtime_never_imports_torch(built: tuple[Path, Path]) -> None:
    index_dir, data = built
    env = {**os.environ, "KARYOSEARCH_ONNX": "1", "PYTHONPATH": str(REPO)}
    query = next(data.rglob("*.png"))
    code = (
        "import sys\n"
        "from karyosearch.search.engine import query\n"
        f"r = query([{str(query)!r}], {str(index_dir)!r}, k=3).results\n"
        "assert r[0].neighbours[0].path == r[0].query, r\n"
        "print('torch' in sys.modules)\n"
    )
    run = [sys.executable, "-c", code]
    subprocess.run(run, env=env, check=True, capture_output=True)  # exports (imports torch)
    again = subprocess.run(run, env=env, check=True, capture_output=True, text=True)
    assert again.stdout.strip() == "False"
