"""The shipped encoder for the images' stain, when no --model is given."""

from __future__ import annotations

from pathlib import Path

import pytest

from karyosearch.errors import UserError
from karyosearch.model.shipped import SHIPPED, choose_shipped

from ..conftest import chromosome_array, write_image


def images(folder: Path, bright: bool, n: int = 5) -> list[Path]:
    arrays = (chromosome_array(50, 16, bright=bright, seed=i) for i in range(n))
    return [write_image(folder / f"c{i}.png", a) for i, a in enumerate(arrays)]


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    for name in SHIPPED.values():
        (folder / name).write_bytes(b"stand-in")
    monkeypatch.setenv("KARYOSEARCH_MODELS", str(folder))
    return folder


def test_bright_on_dark_is_q_band_and_dark_on_light_g_band(tmp_path: Path, models: Path):
    q = choose_shipped(images(tmp_path / "q", bright=True))
    g = choose_shipped(images(tmp_path / "g", bright=False))
    assert (q.stain, q.path.name) == ("Q-band", SHIPPED["Q-band"])
    assert (g.stain, g.path.name) == ("G-band", SHIPPED["G-band"])
    assert "5 of 5 sampled images look G-band" in g.note and str(g.path) in g.note


def test_the_majority_of_the_readable_images_decides(tmp_path: Path, models: Path):
    paths = images(tmp_path / "g", bright=False, n=4) + images(tmp_path / "q", bright=True, n=1)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    choice = choose_shipped([*paths, tmp_path / "broken.png"])
    assert (choice.stain, choice.agreeing, choice.sampled) == ("G-band", 4, 5)


def test_a_missing_shipped_model_or_no_image_is_one_clear_error(tmp_path: Path, models: Path):
    (models / SHIPPED["G-band"]).unlink()
    with pytest.raises(UserError, match="shipped G-band encoder .* is not there; pass --model"):
        choose_shipped(images(tmp_path / "g", bright=False))
    with pytest.raises(UserError, match="none of the sampled images could be read"):
        choose_shipped([tmp_path / "nothing.png"])
