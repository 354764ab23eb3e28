"""The image pipeline: every format, depth, colour mode and polarity gives the same crop;
canvases do not leak; prepare keeps the aspect; bad files raise ImageError with a reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from karyosearch.data.image import (
    MAX_SIDE,
    MIN_COMPONENT_SHARE,
    PREPROCESS_VERSION,
    ImageError,
    content_box,
    crop_chromosome,
    detect_polarity,
    foreground_area,
    load,
    load_prepared,
    prepare,
    read_grey,
)

from ..conftest import chromosome_array, write_image

LOSSLESS = ("bmp", "png", "tif", "tiff")


@pytest.fixture(scope="module")
def grey() -> np.ndarray:
    """A made-up bright-on-dark chromosome, 60 x 24 px."""
    return chromosome_array(60, 24, seed=3)


@pytest.fixture
def reference(grey: np.ndarray, tmp_path: Path) -> np.ndarray:
    """`load` of the 8-bit grey PNG: what every other encoding must give."""
    out = load(write_image(tmp_path / "ref.png", grey))
    assert out.dtype == np.uint8 and out.ndim == 2
    return out


# --- formats, depths and colour modes -------------------------------------------------------


@pytest.mark.parametrize("ext", LOSSLESS)
def test_lossless_formats_give_the_grey_crop(
    ext: str, grey: np.ndarray, reference: np.ndarray, tmp_path: Path
) -> None:
    out = load(write_image(tmp_path / f"c.{ext}", grey))
    np.testing.assert_array_equal(out, reference)


def test_crop_is_the_chromosome_with_background_zero(grey: np.ndarray, reference: np.ndarray):
    rows = np.flatnonzero(grey.any(axis=1))
    cols = np.flatnonzero(grey.any(axis=0))
    expected = grey[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    np.testing.assert_array_equal(reference, expected)


def test_jpeg_is_approximately_the_grey_crop(
    grey: np.ndarray, reference: np.ndarray, tmp_path: Path
) -> None:
    path = tmp_path / "c.jpg"
    Image.fromarray(grey).save(path, quality=95)
    out = load(path)
    assert abs(out.shape[0] - reference.shape[0]) <= 2
    assert abs(out.shape[1] - reference.shape[1]) <= 2
    diff = np.abs(prepare(out, 64) - prepare(reference, 64))
    assert diff.mean() < 0.02


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_16_bit_equals_8_bit(ext: str, grey: np.ndarray, reference: np.ndarray, tmp_path: Path):
    deep = grey.astype(np.uint16) * 257
    im = Image.fromarray(deep)
    assert im.mode == "I;16"
    path = tmp_path / f"deep.{ext}"
    im.save(path)
    with Image.open(path) as back:  # the file really is 16-bit, not re-quantised on save
        assert back.mode.startswith("I")
    np.testing.assert_array_equal(read_grey(path), grey)
    np.testing.assert_array_equal(load(path), reference)


def test_16_bit_dark_on_light_equals_8_bit(
    grey: np.ndarray, reference: np.ndarray, tmp_path: Path
) -> None:
    deep = (255 - grey).astype(np.uint16) * 257
    path = tmp_path / "deep_dark.png"
    Image.fromarray(deep).save(path)
    np.testing.assert_array_equal(load(path), reference)


@pytest.mark.parametrize("ext", ["png", "tif", "bmp"])
def test_rgb_with_equal_channels(ext: str, grey: np.ndarray, reference: np.ndarray, tmp_path):
    rgb = np.stack([grey] * 3, axis=-1)
    path = write_image(tmp_path / f"rgb.{ext}", rgb, mode="RGB")
    np.testing.assert_array_equal(load(path), reference)


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_rgba_with_equal_channels(ext: str, grey: np.ndarray, reference: np.ndarray, tmp_path):
    rgba = np.dstack([grey, grey, grey, np.full_like(grey, 255)])
    path = write_image(tmp_path / f"rgba.{ext}", rgba, mode="RGBA")
    with Image.open(path) as im:
        assert im.mode == "RGBA"
    np.testing.assert_array_equal(load(path), reference)


def test_rgba_dark_on_light_like_gband(grey: np.ndarray, reference: np.ndarray, tmp_path: Path):
    dark = 255 - grey
    rgba = np.dstack([dark, dark, dark, np.full_like(dark, 255)])
    path = write_image(tmp_path / "rgba.tiff", rgba, mode="RGBA")
    np.testing.assert_array_equal(load(path), reference)


@pytest.mark.parametrize("ext", ["png", "tif", "bmp"])
def test_palette(ext: str, grey: np.ndarray, reference: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / f"pal.{ext}"
    Image.fromarray(grey).convert("P").save(path)
    np.testing.assert_array_equal(load(path), reference)


def test_palette_with_transparency(grey: np.ndarray, reference: np.ndarray, tmp_path: Path):
    path = tmp_path / "pal_t.png"
    im = Image.fromarray(grey).convert("P")
    im.save(path, transparency=255)  # an index that no pixel uses
    with Image.open(path) as back:
        assert back.mode == "P" and "transparency" in back.info
    np.testing.assert_array_equal(load(path), reference)


# --- polarity ---------------------------------------------------------------------------------


def test_detect_polarity(grey: np.ndarray) -> None:
    assert detect_polarity(grey) == "bright"
    assert detect_polarity(255 - grey) == "dark"


@pytest.mark.parametrize("ext", ["png", "tiff"])
def test_dark_on_light_is_auto_detected(
    ext: str, grey: np.ndarray, reference: np.ndarray, tmp_path: Path
) -> None:
    path = write_image(tmp_path / f"dark.{ext}", 255 - grey)
    np.testing.assert_array_equal(load(path), reference)


def test_polarity_override(grey: np.ndarray, reference: np.ndarray, tmp_path: Path) -> None:
    bright = write_image(tmp_path / "bright.png", grey)
    dark = write_image(tmp_path / "dark.png", 255 - grey)
    np.testing.assert_array_equal(load(bright, polarity="bright"), reference)
    np.testing.assert_array_equal(load(dark, polarity="dark"), reference)
    # The override is obeyed, not second-guessed: the wrong polarity finds no chromosome.
    with pytest.raises(ImageError, match="all background"):
        load(dark, polarity="bright")
    with pytest.raises(ImageError, match="all background"):
        load(bright, polarity="dark")
    with pytest.raises(ValueError, match="polarity"):
        crop_chromosome(grey, polarity="sideways")  # type: ignore[arg-type]


# --- canvas -----------------------------------------------------------------------------------


@pytest.mark.parametrize("where", [(70, 38), (0, 0), (140, 76)])
def test_black_canvas_gives_the_tight_crop(
    where: tuple[int, int], grey: np.ndarray, reference: np.ndarray, tmp_path: Path
) -> None:
    """As BioImLab karyotypes 38-80: a crop on a 100 x 200 black canvas must not differ."""
    top, left = where
    canvas = np.zeros((200, 100), np.uint8)
    canvas[top : top + grey.shape[0], left : left + grey.shape[1]] = grey
    out = load(write_image(tmp_path / "canvas.bmp", canvas))
    np.testing.assert_array_equal(out, reference)
    np.testing.assert_array_equal(prepare(out, 32), prepare(reference, 32))


def test_white_canvas_gives_the_tight_crop(grey: np.ndarray, reference: np.ndarray, tmp_path):
    canvas = np.full((200, 100), 255, np.uint8)
    canvas[70:130, 38:62] = 255 - grey
    out = load(write_image(tmp_path / "canvas.tiff", canvas))
    np.testing.assert_array_equal(out, reference)


def test_load_is_idempotent(reference: np.ndarray, tmp_path: Path) -> None:
    """A crop saved and loaded again stays the same (the chromosome now touches the edges)."""
    np.testing.assert_array_equal(load(write_image(tmp_path / "again.png", reference)), reference)


# --- prepare ----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [16, 32, 64, 224])
def test_prepare_shape_dtype_range(size: int, reference: np.ndarray) -> None:
    out = prepare(reference, size)
    assert out.shape == (size, size)
    assert out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert out.max() == pytest.approx(1.0)  # contrast normalised
    assert out[0, 0] == 0.0  # padding is background


@pytest.mark.parametrize("size", [30, 60, 120])
def test_prepare_keeps_aspect(size: int) -> None:
    """A 60 x 20 crop fills only the middle third of the columns (one pixel of resampling)."""
    crop = np.full((60, 20), 200, np.uint8)
    out = prepare(crop, size)
    cols = np.flatnonzero(out.any(axis=0))
    rows = np.flatnonzero(out.any(axis=1))
    third = size // 3
    slack = 0 if size == 60 else 1
    assert cols[0] >= third - slack and cols[-1] <= 2 * third - 1 + slack
    assert rows[0] == 0 and rows[-1] == size - 1
    assert out[:, size // 2].min() == pytest.approx(1.0)


def test_prepare_transposed_keeps_aspect() -> None:
    out = prepare(np.full((20, 60), 200, np.uint8), 60)
    assert list(np.flatnonzero(out.any(axis=1))) == list(range(20, 40))


def test_prepare_canvas_keeps_one_scale_for_crops_up_to_the_canvas() -> None:
    """Canvas 120 px at S=60: a 60 px crop spans half the frame, a 30 px crop a quarter, so
    length survives; a crop longer than the canvas is shrunk to fill the frame."""

    def rows(length: int, canvas: int) -> int:
        out = prepare(np.full((length, 10), 200, np.uint8), 60, canvas)
        return len(np.flatnonzero(out.any(axis=1)))

    assert abs(rows(60, 120) - 30) <= 2 and abs(rows(30, 120) - 15) <= 2  # +-resampling blur
    assert rows(240, 120) == 60
    assert rows(60, 0) == rows(30, 0) == 60  # no canvas: every crop fills the frame
    np.testing.assert_array_equal(
        prepare(np.full((60, 10), 200, np.uint8), 60, 40),
        prepare(np.full((60, 10), 200, np.uint8), 60),
    )


def test_prepare_rejects_empty_and_non_2d() -> None:
    with pytest.raises(ValueError):
        prepare(np.zeros((0, 5), np.uint8), 32)
    with pytest.raises(ValueError):
        prepare(np.zeros((4, 4, 3), np.uint8), 32)


def test_foreground_area_counts_the_chromosome_pixels(tmp_path: Path) -> None:
    """Q-band (bright) and G-band (dark) files of one chromosome have the same area: its
    pixels, not its bounding box; twice the length and width, four times the area."""
    bright = chromosome_array(60, 24)
    body = int((bright > 0).sum())
    assert body < 60 * 24
    for name, array in (("q.png", bright), ("g.png", 255 - bright)):
        assert foreground_area(load(write_image(tmp_path / name, array))) == body
    big = np.asarray(Image.fromarray(bright).resize((48, 120), Image.Resampling.NEAREST))
    assert foreground_area(load(write_image(tmp_path / "big.png", big))) == 4 * body


def test_load_prepared_is_prepare_of_load(grey: np.ndarray, tmp_path: Path) -> None:
    path = write_image(tmp_path / "x.png", 255 - grey)
    np.testing.assert_array_equal(load_prepared(path, 48), prepare(load(path), 48))


# --- the content box, by preprocessing version -----------------------------------------------


def _with_speck(grey: np.ndarray, side: int = 2, level: int = 60) -> np.ndarray:
    """`grey` on a larger dark canvas, with a faint square speck in its top-left corner."""
    canvas = np.zeros((grey.shape[0] + 20, grey.shape[1] + 20), np.uint8)
    canvas[10:-10, 10:-10] = grey
    canvas[1 : 1 + side, 1 : 1 + side] = level
    return canvas


def test_the_current_box_leaves_out_a_faint_speck_v1_kept(grey: np.ndarray) -> None:
    specked = _with_speck(grey)
    top, bottom, left, right = content_box(specked[5:, 5:], version=1)  # the chromosome alone
    assert PREPROCESS_VERSION == 2
    assert content_box(specked, version=2) == (top + 5, bottom + 5, left + 5, right + 5)
    assert content_box(specked, version=1) == (1, bottom + 5, 1, right + 5)  # from the speck
    assert np.array_equal(crop_chromosome(specked, version=2), crop_chromosome(grey))


def test_the_current_box_keeps_every_large_piece() -> None:
    """A chromosome the threshold cuts in two (a pale centromere) is still framed whole; a
    piece under MIN_COMPONENT_SHARE of the largest is left out, one at it is kept."""
    bright = np.zeros((80, 60), np.uint8)
    bright[5:35, 10:20] = 200  # 300 px
    bright[40:70, 10:20] = 200  # 300 px, apart from the first by a dark gap
    assert content_box(bright, version=2) == (5, 70, 10, 20)
    small = int(np.ceil(MIN_COMPONENT_SHARE * 300))
    bright[75, 30 : 30 + small - 1] = 200  # just under the share: left out
    assert content_box(bright, version=2) == (5, 70, 10, 20)
    bright[75, 30 : 30 + small] = 200  # at the share: kept
    assert content_box(bright, version=2) == (5, 76, 10, 30 + small)


def test_an_unknown_preprocessing_version_is_refused(grey: np.ndarray) -> None:
    with pytest.raises(ValueError, match="preprocessing version 3"):
        crop_chromosome(grey, version=3)


def test_load_prepares_the_version_asked_for(grey: np.ndarray, tmp_path: Path) -> None:
    path = write_image(tmp_path / "specked.png", _with_speck(grey))
    assert np.array_equal(load(path), load(path, version=2))
    assert load(path, version=1).shape != load(path, version=2).shape
    assert np.array_equal(load_prepared(path, 32, version=1), prepare(load(path, version=1), 32))


# --- bad inputs -------------------------------------------------------------------------------


def assert_image_error(path: Path, reason: str, polarity: str = "auto") -> ImageError:
    with pytest.raises(ImageError) as info:
        load(path, polarity)  # type: ignore[arg-type]
    err = info.value
    assert str(path) in str(err), str(err)
    assert reason in err.reason.lower(), err.reason
    assert err.path == str(path)
    return err


def test_missing_file(tmp_path: Path) -> None:
    assert_image_error(tmp_path / "nothing.png", "no such file")


def test_folder_is_not_a_file(tmp_path: Path) -> None:
    assert_image_error(tmp_path, "not a file")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert_image_error(path, "empty")


def test_text_named_png(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("this is not a picture of a chromosome\n")
    assert_image_error(path, "not an image")


@pytest.mark.parametrize("ext", ["png", "bmp", "tif"])
def test_truncated_file(ext: str, tmp_path: Path) -> None:
    whole = write_image(tmp_path / f"whole.{ext}", chromosome_array(120, 48, seed=5))
    data = whole.read_bytes()
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(data[: len(data) // 2])
    assert_image_error(cut, "truncated")


def test_all_background_black(tmp_path: Path) -> None:
    path = write_image(tmp_path / "black.png", np.zeros((40, 20), np.uint8))
    assert_image_error(path, "all background")
    assert_image_error(path, "all background", polarity="bright")


def test_all_background_white(tmp_path: Path) -> None:
    path = write_image(tmp_path / "white.png", np.full((40, 20), 255, np.uint8))
    assert_image_error(path, "all background")
    assert_image_error(path, "all background", polarity="dark")


@pytest.mark.parametrize("shape", [(1, MAX_SIDE + 1), (10, 5000), (5000, 10)])
def test_too_large(shape: tuple[int, int], tmp_path: Path) -> None:
    path = write_image(tmp_path / "huge.png", np.zeros(shape, np.uint8))
    err = assert_image_error(path, "larger than")
    assert str(MAX_SIDE) in err.reason


def test_largest_allowed_side_loads(tmp_path: Path) -> None:
    canvas = np.zeros((40, MAX_SIDE), np.uint8)
    canvas[5:35, 100:112] = 200
    out = load(write_image(tmp_path / "wide.png", canvas))
    assert out.shape == (30, 12)
