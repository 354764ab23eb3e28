"""Shared fixtures: paths to the real data beside the repository, small made-up images, and
the benchmark scripts loaded as modules."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BIOIMLAB = DATA / "bioimlab"
GBAND = DATA / "gband612"
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """`benchmarks/<name>.py` as a module (a script folder, not a package), registered under
    `name` in sys.modules, where dataclasses look their module up."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def need(path: Path) -> Path:
    """Skip with a clear reason when the real data folder is not beside the repository."""
    if not path.exists():
        pytest.skip(f"real data not found at {path} (expected ../shared/data beside the repo)")
    return path


@pytest.fixture(autouse=True)
def _torch_queries(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory):
    """Queries run on PyTorch in tests (an ONNX export costs seconds per made-up model); an
    export, where a test asks for one (tests/model/test_onnx_encoder.py), goes to a temporary
    cache."""
    monkeypatch.setenv("KARYOSEARCH_ONNX", "0")
    monkeypatch.setenv("KARYOSEARCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def bioimlab() -> Path:
    return need(BIOIMLAB)


@pytest.fixture
def gband() -> Path:
    return need(GBAND)


def chromosome_array(h: int = 60, w: int = 24, bright: bool = True, seed: int = 0) -> np.ndarray:
    """A made-up banded chromosome: a rounded bar with stripes, on a plain background."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w), np.uint8)
    bands = rng.integers(80, 230, size=h)
    yy, xx = np.mgrid[:h, :w]
    body = ((xx - w / 2) / (w / 2 - 3)) ** 2 + ((yy - h / 2) / (h / 2 - 3)) ** 2 <= 1.0
    img[body] = bands[yy[body]]
    return img if bright else 255 - img


def write_image(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def read_manifest(root: Path) -> list[dict[str, str]]:
    """The independent ground truth of a real dataset folder, one dict per manifest row."""
    import csv

    with (root / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# The class folder names of a made-up `folders` layout: 1..22 spelled out, X spelled "23",
# Y spelled "Y", so both the names and the 23/24 aliases are read.
FOLDER_NAMES: tuple[str, ...] = tuple([str(i) for i in range(1, 23)] + ["23", "Y"])


def make_folders_layout(root: Path, per_class: int = 2, junk: bool = True) -> Path:
    """A small `<root>/<class>/<img>.png` dataset: `per_class` images in each of 24 classes.

    With `junk`, a folder named `junk` holds one image that the reader must reject.
    """
    for k, name in enumerate(FOLDER_NAMES):
        for i in range(per_class):
            array = chromosome_array(20 + k, 10 + i, seed=k * 10 + i)
            write_image(root / name / f"img{i}.png", array)
    if junk:
        write_image(root / "junk" / "img0.png", chromosome_array(seed=99))
    return root


# Entries that are no readable regular file, named like images, and the words of the reason
# each must be reported with (`util.regular.file_problem`).
SPECIAL_REASONS: dict[str, str] = {
    "pipe.png": "named pipe",
    "loop.png": "symlink loop",
    "folder.png": "folder named like an image",
    "gone.png": "broken symlink",
    "sock.png": "socket",
}


def make_special_entries(folder: Path) -> dict[str, str]:
    """In `folder`: a FIFO, a symlink loop, an empty folder and a broken symlink named like
    images, and a Unix socket where the path is short enough. Returns {name: reason words}."""
    import os
    import socket

    folder.mkdir(parents=True, exist_ok=True)
    os.mkfifo(folder / "pipe.png")
    os.symlink("loop.png", folder / "loop.png")
    (folder / "folder.png").mkdir()
    os.symlink("nothing-here.png", folder / "gone.png")
    made = dict(SPECIAL_REASONS)
    sock_path = str(folder / "sock.png")
    if len(sock_path) < 100:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(sock_path)
        sock.close()  # the socket file stays
    else:
        del made["sock.png"]
    return made


def unblock_fifo(path: Path) -> None:
    """Let a reader blocked in open() on the FIFO `path` go (it reads end-of-file)."""
    import os

    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:  # nobody is waiting
        pass


def without_hanging(fn, fifos, timeout: float = 20.0):  # noqa: ANN001, ANN201
    """fn() in a thread; if it is still running after `timeout` s (blocked opening one of the
    `fifos`), the FIFOs are unblocked and the test fails instead of hanging."""
    import threading

    out: dict = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as err:  # noqa: BLE001 - handed back to the caller
            out["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        for f in fifos:
            unblock_fifo(f)
        thread.join(10)
        pytest.fail(f"blocked for {timeout:g} s on a FIFO ({', '.join(map(str, fifos))})")
    if "error" in out:
        raise out["error"]
    return out.get("value")


def one_error_line(result) -> str:  # noqa: ANN001
    """The single `error:` line of a CliRunner result that failed as a user mistake should:
    exit 1, no traceback, no exception but the exit, one line on stderr."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]
