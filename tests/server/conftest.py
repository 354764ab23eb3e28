"""Fixtures of the server tests: a small real index (two BioImLab cells) built once per session
with the bundled encoder, and apps serving it read-only and with a write token."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from karyosearch.model.shipped import SHIPPED

from ..conftest import BIOIMLAB, need

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / SHIPPED["Q-band"]
CELLS = BIOIMLAB / "single_chromosomes"
INDEXED_CELLS = ("1", "31")  # a female and a male karyotype: 92 crops, every class
QUERY_CELL = "41"  # karyotyped through the API; not in the index
TOKEN = "test-token-0123456789"


def cell_files(cell: str) -> list[Path]:
    return sorted(p for p in (need(CELLS) / cell).iterdir() if p.suffix == ".bmp")


@pytest.fixture(scope="session")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from karyosearch.data.datasets import Dataset, read_dataset
    from karyosearch.search.update import build_or_update

    if not MODEL.is_file():
        pytest.skip(f"bundled model not found at {MODEL}")
    everything = read_dataset(need(BIOIMLAB))
    keep = [it for it in everything.items if it.cell_id in INDEXED_CELLS]
    assert len(keep) == 92, len(keep)
    out = tmp_path_factory.mktemp("serve") / "index"
    build_or_update(out, Dataset(everything.root, everything.layout, keep), MODEL)
    return out


@pytest.fixture(scope="session")
def app(index_dir: Path):
    from karyosearch.server.app import create_app

    return create_app(index_dir, MODEL)


@pytest.fixture(scope="session")
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def write_client(index_dir: Path, tmp_path: Path):
    """A server with writes on, over its own copy of the index (writes change it)."""
    from fastapi.testclient import TestClient

    from karyosearch.server.app import create_app

    copy = tmp_path / "index"
    shutil.copytree(index_dir, copy)
    app = create_app(
        copy, MODEL, write_token=TOKEN, uploads_dir=tmp_path / "uploads", warm_up=False
    )
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c
