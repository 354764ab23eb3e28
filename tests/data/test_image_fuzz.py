"""Property-based fuzzing of the image loader (hypothesis): whatever bytes a file holds,
`load` returns a valid crop (2-d uint8, 1..MAX_SIDE px a side) or raises ImageError naming
the file; never anything else.

Two profiles, chosen with HYPOTHESIS_PROFILE:

- `ci` (the default): 200 examples per test, about ten seconds for the module;
- `long`: 100,000 examples per test (about 300,000 inputs in one run, an hour or two on
  one core): `HYPOTHESIS_PROFILE=long python -m pytest tests/data/test_image_fuzz.py`.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from karyosearch.data.image import MAX_SIDE, ImageError, load

from ..conftest import chromosome_array

settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,  # the same inputs on every CI run; `long` explores afresh
)
settings.register_profile(
    "long", max_examples=100_000, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Pillow warns about the corrupt TIFF tags it skips; the property is about what load returns
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

WORKDIR = Path(tempfile.mkdtemp(prefix="karyosearch-fuzz-"))
SUFFIXES = (".png", ".bmp", ".tif", ".jpg")
# (format, suffix, modes Pillow writes in it)
FORMATS = (
    ("PNG", ".png", ("1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16")),
    ("BMP", ".bmp", ("1", "L", "P", "RGB", "RGBA")),
    ("TIFF", ".tif", ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "I", "I;16", "F")),
    ("JPEG", ".jpg", ("L", "RGB", "CMYK")),
)


def check_load(path: Path) -> None:
    """The property: a valid crop, or an ImageError naming `path`; nothing else."""
    try:
        crop = load(path)
    except ImageError as err:
        assert err.path == str(path) and err.reason
        return
    assert isinstance(crop, np.ndarray) and crop.dtype == np.uint8 and crop.ndim == 2
    assert 1 <= crop.shape[0] <= MAX_SIDE and 1 <= crop.shape[1] <= MAX_SIDE


def write(data: bytes, suffix: str) -> Path:
    path = WORKDIR / f"input{suffix}"
    path.write_bytes(data)
    return path


def real_image_bytes(fmt: str, seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(chromosome_array(40, 16, bright=seed % 2 == 0, seed=seed)).save(buf, fmt)
    return buf.getvalue()


REAL = {fmt: [real_image_bytes(fmt, s) for s in range(3)] for fmt, _, _ in FORMATS}


@given(data=st.binary(max_size=4096), suffix=st.sampled_from(SUFFIXES))
def test_arbitrary_bytes(data: bytes, suffix: str) -> None:
    check_load(write(data, suffix))


@given(
    fmt=st.sampled_from(FORMATS),
    which=st.integers(0, 2),
    cut=st.floats(0.0, 1.0),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(1, 255)), max_size=8),
    header_only=st.booleans(),
)
def test_truncated_and_corrupted_real_files(
    fmt: tuple, which: int, cut: float, flips: list, header_only: bool
) -> None:
    """Real PNG/BMP/TIFF/JPEG files cut short and with bytes flipped (in the header, where
    sizes and offsets live, or anywhere)."""
    name, suffix, _ = fmt
    data = bytearray(REAL[name][which])
    span = min(len(data), 64) if header_only else len(data)
    for where, xor in flips:
        data[min(int(where * span), len(data) - 1)] ^= xor
    data = data[: max(1, int(round(cut * len(data))))] if cut < 1.0 else data
    check_load(write(bytes(data), suffix))


@st.composite
def pillow_images(draw: st.DrawFn) -> tuple[Image.Image, str, str]:
    fmt, suffix, modes = draw(st.sampled_from(FORMATS))
    mode = draw(st.sampled_from(modes))
    tall = draw(st.booleans())
    long_side = draw(st.one_of(st.integers(1, 48), st.integers(MAX_SIDE - 2, MAX_SIDE + 3)))
    short_side = draw(st.integers(1, 48 if long_side <= 48 else 3))
    h, w = (long_side, short_side) if tall else (short_side, long_side)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(("noise", "constant", "chromosome")))
    grey = {
        "noise": lambda: rng.integers(0, 256, (h, w), dtype=np.uint8),
        "constant": lambda: np.full((h, w), int(rng.integers(0, 256)), np.uint8),
        "chromosome": lambda: np.asarray(
            Image.fromarray(chromosome_array(seed=int(rng.integers(1000)))).resize((w, h))
        ),
    }[kind]()
    if mode in ("I", "I;16"):
        image = Image.fromarray(grey.astype(np.int32) * int(rng.integers(1, 257)), "I")
        image = image.convert(mode) if mode == "I;16" else image
    elif mode == "F":
        image = Image.fromarray(grey.astype(np.float32) * float(rng.uniform(0.01, 300)), "F")
    else:
        image = Image.fromarray(grey, "L").convert(mode)
    return image, fmt, suffix


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(drawn=pillow_images())
def test_random_arrays_in_every_mode_and_size(drawn: tuple) -> None:
    image, fmt, suffix = drawn
    buf = io.BytesIO()
    try:
        image.save(buf, fmt)
    except (OSError, ValueError, KeyError):  # a mode this Pillow cannot write in fmt
        assume(False)
    check_load(write(buf.getvalue(), suffix))


@pytest.mark.parametrize("fmt", [f[0] for f in FORMATS])
def test_the_real_files_themselves_load(fmt: str) -> None:
    for data in REAL[fmt]:
        assert load(write(data, dict((f[0], f[1]) for f in FORMATS)[fmt])).ndim == 2
