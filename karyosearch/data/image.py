"""The one image pipeline: `load` a chromosome crop, then `prepare` it for the network.

Training, indexing and querying all call these two functions, so the same pixels reach the
encoder on every path.

- `load(path)` reads any BMP, PNG, TIFF or JPEG (8- or 16-bit; grey, RGB, RGBA or palette),
  converts it to 8-bit grey, brings it to one polarity (bright chromosome on a dark
  background, as Q-banding gives) and crops it to the chromosome's bounding box
  (`content_box`, by the encoder's preprocessing version), so that a canvas around a crop
  cannot leak where the image came from.
- `prepare(grey, size, canvas)` keeps the aspect ratio, pads the crop to a square (at least
  `canvas` source px, so that chromosome length survives) and resizes it to `size x size`,
  giving float32 values in [0, 1]. `prepare_input` stacks the filled frame and, for an
  encoder trained with a canvas, the fixed-scale view as a second channel.

Every failure is an `ImageError` naming the file and the reason.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import UserError
from ..util.regular import open_regular, os_problem

# Bumped whenever load/prepare change the pixels the network sees; stored in checkpoints and
# index cards so that an encoder is never fed images prepared another way. New encoders are
# trained on PREPROCESS_VERSION; every version in PREPROCESS_VERSIONS can still be prepared, so
# an encoder (and its indexes) keeps the pixels it was trained on across releases.
#   v1: the content box is every pixel FOREGROUND_DELTA above the background.
#   v2: the box of the mask's large connected components only (`MIN_COMPONENT_SHARE`), so that
#       faint specks and a neighbour's edge, which a brighter scan lifts over the threshold,
#       do not shrink the chromosome in its frame (benchmarks/probe_content_box.py).
PREPROCESS_VERSION = 2
PREPROCESS_VERSIONS = (1, 2)

MAX_SIDE = 4096  # px; a chromosome crop larger than this is no chromosome crop
IMAGE_SUFFIXES = frozenset({".bmp", ".png", ".tif", ".tiff", ".jpg", ".jpeg"})
# A pixel belongs to the chromosome when it is this much brighter than the background (after
# the polarity is made bright-on-dark).
FOREGROUND_DELTA = 12
# v2: a connected component (8-connected) of the foreground is kept in the content box when
# its area is at least this share of the largest one's.
MIN_COMPONENT_SHARE = 0.05

Polarity = Literal["auto", "bright", "dark"]
"""`bright`: bright chromosome on a dark background (Q-band); `dark`: dark on light (G-band)."""


class ImageError(UserError):
    """A file that cannot be turned into a chromosome image; names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def is_image_path(path: str | os.PathLike) -> bool:
    """Whether a file name has one of the image suffixes the pipeline reads."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def read_grey(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as 8-bit grey (H, W), whatever its format, depth or colour mode."""
    path = Path(path)
    try:
        fh = open_regular(path)  # never opens a FIFO, socket or device; never blocks
    except FileNotFoundError:
        raise ImageError(path, "no such file") from None
    except OSError as err:
        raise ImageError(path, getattr(err, "reason", None) or os_problem(err, path)) from None
    with fh:
        if os.fstat(fh.fileno()).st_size == 0:
            raise ImageError(path, "empty file")
        return _decode(fh, path)


def _decode(fh: BinaryIO, path: Path) -> np.ndarray:
    try:
        with Image.open(fh) as im:
            width, height = im.size
            if width > MAX_SIDE or height > MAX_SIDE:
                raise ImageError(
                    path, f"image is {width}x{height} px, larger than {MAX_SIDE} px a side"
                )
            if width == 0 or height == 0:
                raise ImageError(path, "image has no pixels")
            im.load()
            return _to_grey_uint8(im)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(path, "not an image (unrecognised format)") from None
    except Image.DecompressionBombError:
        raise ImageError(path, f"image is larger than {MAX_SIDE} px a side") from None
    except (OSError, ValueError, SyntaxError, EOFError) as err:
        raise ImageError(path, f"corrupt or truncated image ({err})") from None


def _to_grey_uint8(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return (np.asarray(im, dtype=np.float64) / 257.0).round().astype(np.uint8)
    if mode in ("I", "F"):
        a = np.asarray(im, dtype=np.float64)
        if a.size and a.max() > 255:  # 16-bit content read as 32-bit ints
            a = a / 257.0
        return np.clip(a, 0, 255).round().astype(np.uint8)
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in ("RGBA", "LA", "PA"):
        im = im.convert("RGB" if mode == "RGBA" else "L")
    if im.mode != "L":
        im = im.convert("L")  # RGB, CMYK, YCbCr, 1: ITU-R 601 luma; equal channels stay exact
    return np.asarray(im, dtype=np.uint8).copy()


def _border(grey: np.ndarray) -> np.ndarray:
    return np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])


def detect_polarity(grey: np.ndarray) -> Literal["bright", "dark"]:
    """Tell Q-band from G-band by the background: the median of the image's outer ring.

    A light background (median above mid-grey) means a dark chromosome on light (`dark`).
    """
    return "dark" if float(np.median(_border(grey))) > 127.5 else "bright"


def to_bright_on_dark(grey: np.ndarray, polarity: Polarity = "auto") -> np.ndarray:
    """Invert dark-on-light images so that every image is a bright chromosome on dark."""
    if polarity == "auto":
        polarity = detect_polarity(grey)
    if polarity == "dark":
        return 255 - grey
    if polarity != "bright":
        raise ValueError(f"polarity must be auto, bright or dark, not {polarity!r}")
    return grey


def foreground_mask(bright: np.ndarray) -> np.ndarray:
    """The chromosome's pixels of a bright-on-dark image: `FOREGROUND_DELTA` brighter than the
    background (the median of the outer ring)."""
    return bright > float(np.median(_border(bright))) + FOREGROUND_DELTA


def content_box(
    bright: np.ndarray, version: int = PREPROCESS_VERSION
) -> tuple[int, int, int, int] | None:
    """Bounding box (top, bottom, left, right; exclusive ends) of the chromosome, or None.

    Chromosome pixels are `foreground_mask`'s. From `version` 2 only the mask's connected
    components of at least `MIN_COMPONENT_SHARE` of the largest one's area count.
    """
    mask = foreground_mask(bright)
    if not mask.any():
        return None
    if version >= 2:
        mask = _large_components(mask)
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _large_components(mask: np.ndarray) -> np.ndarray:
    """The mask's 8-connected components of at least MIN_COMPONENT_SHARE of the largest."""
    from scipy import ndimage  # here: a cold query of a v1 encoder does not pay the import

    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n == 1:
        return mask
    areas = np.bincount(labels.ravel())[1:]
    keep = np.flatnonzero(areas >= MIN_COMPONENT_SHARE * areas.max()) + 1
    return np.isin(labels, keep)


def load(
    path: str | os.PathLike, polarity: Polarity = "auto", version: int = PREPROCESS_VERSION
) -> np.ndarray:
    """Read a chromosome crop as uint8 (H, W): bright on a zero background, cropped to content.

    `polarity` overrides the automatic choice (`bright` for Q-band, `dark` for G-band);
    `version` is the preprocessing an encoder was trained on (`EncoderConfig.preprocess_version`).
    Raises `ImageError` for a missing, empty, corrupt, non-image, oversized or
    all-background file.
    """
    return crop_chromosome(read_grey(path), polarity, path, version)


def crop_chromosome(
    grey: np.ndarray,
    polarity: Polarity = "auto",
    path: str | os.PathLike = "<array>",
    version: int = PREPROCESS_VERSION,
) -> np.ndarray:
    """The part of `load` after reading: one polarity, background to zero, cropped to content."""
    if version not in PREPROCESS_VERSIONS:
        raise ValueError(f"preprocessing version {version} is not one of {PREPROCESS_VERSIONS}")
    bright = to_bright_on_dark(grey, polarity)
    box = content_box(bright, version)
    if box is None:
        raise ImageError(path, "no chromosome found: the image is all background")
    top, bottom, left, right = box
    crop = bright[top:bottom, left:right].astype(np.int16)
    background = int(np.median(_border(bright)))
    return np.clip(crop - background, 0, 255).astype(np.uint8)


def foreground_area(crop: np.ndarray) -> int:
    """Chromosome pixels of a crop from `load` (source resolution): its size, which `prepare`
    with no canvas hides from the network. Compared within a cell, it tells a 1 from a 21."""
    return int((np.asarray(crop) > FOREGROUND_DELTA).sum())


def prepare(grey: np.ndarray, size: int, canvas: int = 0) -> np.ndarray:
    """Pad a cropped chromosome to a square (aspect kept, centred) and resize to size x size.

    `canvas` 0: the crop fills the frame, so every chromosome looks the same size. `canvas`
    C > 0: the crop is centred on a square of at least C source px before resizing, so all
    crops up to C px share one scale and the network sees how long a chromosome is (a 1 is
    four times a 21); larger crops are shrunk to fit.

    Contrast is normalised per image: the 99th percentile of the chromosome's pixels maps to
    1 (Q-band brightness varies from cell to cell). Returns float32 (size, size) in [0, 1];
    the padding is background (0).
    """
    if grey.ndim != 2 or grey.size == 0:
        raise ValueError(f"expected a non-empty 2-d grey image, got shape {grey.shape}")
    h, w = grey.shape
    side = max(h, w, canvas)
    square = np.zeros((side, side), dtype=np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    square[top : top + h, left : left + w] = grey
    if side != size:
        square = np.asarray(
            Image.fromarray(square).resize(
                (size, size), Image.Resampling.BILINEAR, reducing_gap=None
            )
        )
    out = square.astype(np.float32)
    content = out[out > 0]
    scale = float(np.percentile(content, 99)) if content.size else 255.0
    return np.clip(out / max(scale, 1.0), 0.0, 1.0)


def prepare_input(grey: np.ndarray, size: int, canvas: int = 0) -> np.ndarray:
    """The network input for a cropped chromosome: (S, S) with no canvas; with a canvas,
    (2, S, S): the crop filling the frame (bands at full resolution) and the crop on the
    fixed-scale canvas (its length). A small chromosome keeps its band detail and its size."""
    full = prepare(grey, size)
    if not canvas:
        return full
    return np.stack([full, prepare(grey, size, canvas)])


def load_prepared(
    path: str | os.PathLike,
    size: int,
    polarity: Polarity = "auto",
    canvas: int = 0,
    version: int = PREPROCESS_VERSION,
) -> np.ndarray:
    """`prepare_input(load(path, polarity, version), size, canvas)`: the network input for
    one file."""
    return prepare_input(load(path, polarity, version), size, canvas)
